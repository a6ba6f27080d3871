# The simulator's Python control panel (implemented in _sim.pyx).
# hcltdx._core and hcltdx._simdev reach the model only through `ops`/`ctx`
# (the backend table), never by linking the simulator's symbols.
from hcltdx.includes.sim cimport hcltdx_sim
from hcltdx.includes.backend cimport hcltdx_backend_ops

cdef class Sim:
    cdef hcltdx_sim *_sim
    cdef const hcltdx_backend_ops *ops  # &hcltdx_sim_backend_ops
    cdef void *ctx                      # == _sim
    cdef readonly int backing_fd        # -1, or the fd whose pages the model maps
    cdef readonly object backing_path   # None, or a path naming the backing file
    cdef object __weakref__

    cdef hcltdx_sim *_ptr(self) except NULL
