"""hcltdx: fast, safe Python access to the TDX backing of OpenHCL's
``mshv_vtl`` kernel interface, with a faithful simulator.

Start with :meth:`Hcl.simulated` (no hardware needed) or :meth:`Hcl.open`.
"""

try:
    from hcltdx import _cabi  # noqa: F401  (first: it has no Python dependencies)
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "hcltdx's compiled extensions are missing or failed to load. Install the "
        "package with `pip install .` (or build in place with "
        "`python setup.py build_ext --inplace`)."
    ) from exc

from hcltdx.errors import *  # noqa: F401,F403
from hcltdx.memory_range import *  # noqa: F401,F403
from hcltdx.protocol import *  # noqa: F401,F403
from hcltdx.tdx import *  # noqa: F401,F403
from hcltdx.vmx import *  # noqa: F401,F403
from hcltdx.x86 import *  # noqa: F401,F403

from hcltdx import abi  # noqa: F401
from hcltdx._core import Hcl, MshvVtl, TdxPrivateRegs, TdxRunner  # noqa: F401

try:
    from hcltdx._sim import Sim  # noqa: F401
except ImportError as exc:  # pragma: no cover
    raise ImportError(f"hcltdx's simulator extension failed to load: {exc}") from exc

from hcltdx import demo, snapshot, trace  # noqa: E402,F401

__version__ = "0.1.0"
