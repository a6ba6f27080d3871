from typing import Any, Dict, List, Tuple

REQUESTS: Dict[str, int]
PAGE_OFFSETS: Dict[str, int]

def c_layout() -> Dict[str, Dict[str, Any]]: ...
def vmcs_catalogue() -> List[Tuple[str, int, int, int]]: ...
