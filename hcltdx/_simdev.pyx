# cython: boundscheck=False, wraparound=False
"""A stand-in ``/dev/mshv_vtl``: a FUSE daemon speaking the raw /dev/fuse protocol.

The mount holds one regular file, ``mshv_vtl``. ``MSHV_VTL_TDCALL`` on it
reaches the simulator through its backend table, for the VP of the CPU the
calling thread runs on; ``mmap`` goes through FUSE passthrough straight to the
simulator's backing file, so run pages and VTL0 APIC pages are shared live.
See docs/simdev.md.
"""

from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from libc.errno cimport (EBUSY, EINTR, EINVAL, ENODEV, ENOENT, ENOSYS, ENOTDIR,
                         ENOTTY, EPERM, errno)
from libc.limits cimport INT_MAX
from libc.math cimport ceil
from libc.stdint cimport int32_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset, strdup, strlen
from posix.fcntl cimport O_CLOEXEC, O_RDONLY, O_RDWR, open
from posix.unistd cimport close, pread, read, write

from hcltdx._sim cimport Sim
from hcltdx.includes.abi cimport mshv_tdcall
from hcltdx.includes.backend cimport hcltdx_backend_ops

import os


cdef extern from "<sys/ioctl.h>" nogil:
    int ioctl(int fd, unsigned long request, ...)

cdef extern from "<sys/mount.h>" nogil:
    int mount(const char *source, const char *target, const char *fstype,
              unsigned long flags, const void *data)
    int umount2(const char *target, int flags)
    const unsigned long MS_NOSUID
    const unsigned long MS_NODEV
    const unsigned long MS_NOEXEC
    const int MNT_FORCE
    const int MNT_DETACH

cdef extern from "<sched.h>" nogil:
    ctypedef struct cpu_set_t:
        pass
    int sched_getaffinity(int pid, size_t size, cpu_set_t *mask)
    int CPU_COUNT(cpu_set_t *mask)
    int CPU_ISSET(int cpu, cpu_set_t *mask)
    const int CPU_SETSIZE

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    const short POLLIN

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    int pthread_create(pthread_t *t, const void *attr, void *(*fn)(void *) noexcept nogil,
                       void *arg)
    int pthread_join(pthread_t t, void **ret)

cdef extern from "<unistd.h>" nogil:
    int pipe2(int fds[2], int flags)
    int getpid()


# ---- the FUSE wire protocol (Linux include/uapi/linux/fuse.h, 7.40+) -------

cdef enum:
    FUSE_MAJOR = 7
    FUSE_MINOR_PASSTHROUGH = 40   # first minor with FUSE_PASSTHROUGH
    FUSE_MINOR_SPOKEN = 40

    FUSE_LOOKUP = 1
    FUSE_FORGET = 2
    FUSE_GETATTR = 3
    FUSE_SETATTR = 4
    FUSE_OPEN = 14
    FUSE_READ = 15
    FUSE_WRITE = 16
    FUSE_STATFS = 17
    FUSE_RELEASE = 18
    FUSE_FSYNC = 20
    FUSE_FLUSH = 25
    FUSE_INIT = 26
    FUSE_OPENDIR = 27
    FUSE_READDIR = 28
    FUSE_RELEASEDIR = 29
    FUSE_FSYNCDIR = 30
    FUSE_ACCESS = 34
    FUSE_INTERRUPT = 36
    FUSE_DESTROY = 38
    FUSE_IOCTL = 39
    FUSE_BATCH_FORGET = 42

    FUSE_IOCTL_UNRESTRICTED = 1 << 1
    FOPEN_DIRECT_IO = 1 << 0
    FOPEN_NOFLUSH = 1 << 5
    FOPEN_PASSTHROUGH = 1 << 7
    FUSE_INIT_EXT = 1 << 30
    FUSE_PASSTHROUGH_FLAG2 = 1 << 5   # FUSE_PASSTHROUGH is bit 37: flags2 bit 5

    ROOT_ID = 1
    FILE_ID = 2

    S_IFDIR = 0o040000
    S_IFREG = 0o100000
    DT_DIR = 4
    DT_REG = 8

    # 1 MiB of request body is far above anything the kernel sends us
    # (max_write is 4096, an ioctl argument at most 16 KiB).
    BUF_SIZE = (1 << 20) + 4096

cdef unsigned long FUSE_DEV_IOC_BACKING_OPEN = 0x4010E501
cdef unsigned long FUSE_DEV_IOC_BACKING_CLOSE = 0x4004E502
cdef uint32_t TDCALL_CMD = 0xC038B832
cdef uint32_t TDCALL_SIZE = 56

cdef struct fuse_in_header:
    uint32_t len
    uint32_t opcode
    uint64_t unique
    uint64_t nodeid
    uint32_t uid
    uint32_t gid
    uint32_t pid
    uint16_t total_extlen
    uint16_t padding

cdef struct fuse_out_header:
    uint32_t len
    int32_t error
    uint64_t unique

cdef struct fuse_init_in:
    uint32_t major
    uint32_t minor
    uint32_t max_readahead
    uint32_t flags
    uint32_t flags2
    uint32_t unused[11]

cdef struct fuse_init_out:
    uint32_t major
    uint32_t minor
    uint32_t max_readahead
    uint32_t flags
    uint16_t max_background
    uint16_t congestion_threshold
    uint32_t max_write
    uint32_t time_gran
    uint16_t max_pages
    uint16_t map_alignment
    uint32_t flags2
    uint32_t max_stack_depth
    uint32_t unused[6]

cdef struct fuse_attr:
    uint64_t ino
    uint64_t size
    uint64_t blocks
    uint64_t atime
    uint64_t mtime
    uint64_t ctime
    uint32_t atimensec
    uint32_t mtimensec
    uint32_t ctimensec
    uint32_t mode
    uint32_t nlink
    uint32_t uid
    uint32_t gid
    uint32_t rdev
    uint32_t blksize
    uint32_t flags

cdef struct fuse_entry_out:
    uint64_t nodeid
    uint64_t generation
    uint64_t entry_valid
    uint64_t attr_valid
    uint32_t entry_valid_nsec
    uint32_t attr_valid_nsec
    fuse_attr attr

cdef struct fuse_attr_out:
    uint64_t attr_valid
    uint32_t attr_valid_nsec
    uint32_t dummy
    fuse_attr attr

cdef struct fuse_open_out:
    uint64_t fh
    uint32_t open_flags
    int32_t backing_id

cdef struct fuse_read_in:
    uint64_t fh
    uint64_t offset
    uint32_t size
    uint32_t read_flags
    uint64_t lock_owner
    uint32_t flags
    uint32_t padding

cdef struct fuse_dirent:
    uint64_t ino
    uint64_t off
    uint32_t namelen
    uint32_t type

cdef struct fuse_kstatfs:
    uint64_t blocks
    uint64_t bfree
    uint64_t bavail
    uint64_t files
    uint64_t ffree
    uint32_t bsize
    uint32_t namelen
    uint32_t frsize
    uint32_t padding
    uint32_t spare[6]

cdef struct fuse_ioctl_in:
    uint64_t fh
    uint32_t flags
    uint32_t cmd
    uint64_t arg
    uint32_t in_size
    uint32_t out_size

cdef struct fuse_ioctl_out:
    int32_t result
    uint32_t flags
    uint32_t in_iovs
    uint32_t out_iovs

cdef struct fuse_backing_map:
    int32_t fd
    uint32_t flags
    uint64_t padding

# The kernel rejects a reply of the wrong length: pin the layouts here too.
assert sizeof(fuse_in_header) == 40 and sizeof(fuse_out_header) == 16
assert sizeof(fuse_init_in) == 64 and sizeof(fuse_init_out) == 64
assert sizeof(fuse_attr) == 88 and sizeof(fuse_entry_out) == 128
assert sizeof(fuse_attr_out) == 104 and sizeof(fuse_open_out) == 16
assert sizeof(fuse_ioctl_in) == 32 and sizeof(fuse_ioctl_out) == 16
assert sizeof(fuse_kstatfs) == 80 and sizeof(fuse_backing_map) == 16
assert sizeof(fuse_dirent) == 24 and sizeof(mshv_tdcall) == 56

FILE_NAME = "mshv_vtl"
cdef bytes _FILE_NAME_B = FILE_NAME.encode()


class SimDevUnavailable(OSError):
    """The stand-in device cannot run here; the message says what is missing."""


cdef int _raise_errno(object what) except -1:
    cdef int err = errno
    raise OSError(err, f"{what}: {os.strerror(err)}")


def umount(path, *, force=False):
    """Unmount ``path``; if busy (or ``force``), abort its FUSE connection
    (MNT_FORCE) and detach it lazily (MNT_DETACH). Returns True when something
    was unmounted, False when ``path`` was not a mount point."""
    cdef bytes pb = os.fsencode(path)
    cdef const char *p = pb
    cdef int rc, err
    if not force:
        with nogil:
            rc = umount2(p, 0)
            err = errno
        if rc == 0:
            return True
        if err in (EINVAL, ENOENT, ENOTDIR):
            return False
        if err != EBUSY:
            raise OSError(err, f"umount {path!r}: {os.strerror(err)}")
    with nogil:
        rc = umount2(p, MNT_FORCE | MNT_DETACH)
        err = errno
        if rc != 0 and err == EPERM:
            # MNT_FORCE needs CAP_SYS_ADMIN in the initial user namespace.
            rc = umount2(p, MNT_DETACH)
            err = errno
    if rc == 0:
        return True
    if err in (EINVAL, ENOENT, ENOTDIR):
        return False
    raise OSError(err, f"umount -f -l {path!r}: {os.strerror(err)}")


def mount_tmpfs(path, uint64_t pages):
    """Mount a tmpfs of exactly ``pages`` 4 KiB blocks on ``path``."""
    cdef bytes pb = os.fsencode(path)
    cdef bytes ob = f"nr_blocks={pages},huge=never,mode=0700".encode()
    cdef const char *p = pb
    cdef const char *opts = ob
    cdef int rc
    with nogil:
        rc = mount(b"hcltdx-simdev-backing", p, b"tmpfs",
                   MS_NOSUID | MS_NODEV | MS_NOEXEC, opts)
    if rc != 0:
        _raise_errno(f"mount tmpfs on {path!r}")


cdef class Server:
    """One FUSE connection serving ``mshv_vtl`` over a :class:`Sim`.

    ``mount(mountpoint)`` mounts and completes the INIT handshake (raising
    :class:`SimDevUnavailable` when passthrough cannot work), ``serve()``
    answers requests until the mount goes away. ``serve`` holds the GIL while
    it handles a request and releases it only while blocked reading
    /dev/fuse: a caller in the same process that issued an ioctl without
    releasing the GIL deadlocks, on purpose.
    """
    cdef Sim sim
    cdef const hcltdx_backend_ops *ops
    cdef void *ctx
    cdef int fuse_fd
    cdef int backing_id
    cdef uint32_t vp_count
    cdef uint64_t _file_size
    cdef unsigned char *buf
    cdef unsigned char *reply
    cdef dict _stat_fds
    cdef bint _initialised
    cdef bint _destroyed
    cdef readonly object mountpoint
    cdef readonly uint32_t kernel_minor
    cdef readonly uint64_t kernel_flags
    cdef readonly uint64_t requests
    cdef readonly uint64_t tdcalls

    def __cinit__(self):
        self.fuse_fd = -1
        self.backing_id = -1
        self.buf = NULL
        self.reply = NULL

    def __init__(self, Sim sim not None, vp_count=None):
        if self.buf != NULL:
            raise RuntimeError("Server is already initialised")
        if sim.backing_fd < 0:
            raise ValueError("the simulator needs a backing file (backing='memfd' or a path)")
        if sim.ops == NULL or sim.ctx == NULL:
            raise ValueError("the simulator is closed")
        self.sim = sim
        self.ops = sim.ops
        self.ctx = sim.ctx
        self.vp_count = sim.vp_count if vp_count is None else vp_count
        self._file_size = os.fstat(sim.backing_fd).st_size
        self._stat_fds = {}
        self.buf = <unsigned char *>malloc(BUF_SIZE)
        self.reply = <unsigned char *>malloc(4096)
        if self.buf == NULL or self.reply == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self.fuse_fd >= 0:
            close(self.fuse_fd)
        for fd in (self._stat_fds or {}).values():
            os.close(fd)
        free(self.buf)
        free(self.reply)

    @property
    def fd(self):
        return self.fuse_fd

    @property
    def file_size(self):
        return self._file_size

    def mount(self, mountpoint):
        """Mount on ``mountpoint`` and finish the INIT handshake."""
        if self.fuse_fd >= 0:
            raise RuntimeError("already mounted")
        cdef bytes mpb = os.fsencode(mountpoint)
        cdef const char *mp = mpb
        cdef const char *optp
        cdef int fd, rc, err
        with nogil:
            fd = open(b"/dev/fuse", O_RDWR | O_CLOEXEC)
            err = errno
        if fd < 0:
            raise SimDevUnavailable(err, f"cannot open /dev/fuse: {os.strerror(err)}"
                                    + (" (no FUSE in this kernel or container)" if err == ENOENT else ""))
        cdef bytes opts = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
        optp = opts
        with nogil:
            rc = mount(b"hcltdx-simdev", mp, b"fuse", MS_NOSUID | MS_NODEV, optp)
            err = errno
        if rc != 0:
            close(fd)
            if err == EPERM:
                raise SimDevUnavailable(err, "mounting FUSE needs CAP_SYS_ADMIN (run as root)")
            raise OSError(err, f"mount fuse on {mountpoint!r}: {os.strerror(err)}")
        self.fuse_fd = fd
        self.mountpoint = os.fspath(mountpoint)
        try:
            while not self._initialised:
                if not self._serve_one():
                    raise SimDevUnavailable(ENODEV, "the FUSE connection ended during INIT")
            self._check_passthrough()
        except BaseException:
            self._abort()
            raise

    cdef int _check_passthrough(self) except -1:
        if self.kernel_minor < FUSE_MINOR_PASSTHROUGH or not (self.kernel_flags >> 37) & 1:
            raise SimDevUnavailable(
                ENOSYS, f"the kernel's FUSE (protocol 7.{self.kernel_minor}) lacks "
                "passthrough (needs Linux >= 6.9 with CONFIG_FUSE_PASSTHROUGH)")
        cdef fuse_backing_map bm
        memset(&bm, 0, sizeof(bm))
        bm.fd = self.sim.backing_fd
        cdef int rc, err
        with nogil:
            rc = ioctl(self.fuse_fd, FUSE_DEV_IOC_BACKING_OPEN, &bm)
            err = errno
        if rc < 0:
            why = " (it needs CAP_SYS_ADMIN in the initial user namespace)" if err == EPERM else ""
            raise SimDevUnavailable(err, "FUSE passthrough unusable: FUSE_DEV_IOC_BACKING_OPEN "
                                    f"failed: {os.strerror(err)}{why}")
        self.backing_id = rc
        return 0

    cdef void _abort(self) noexcept:
        try:
            umount(self.mountpoint)
        except OSError:
            pass
        self.close()

    def close(self):
        """Close the /dev/fuse descriptor (the mount, if any, dies with it)."""
        cdef int fd = self.fuse_fd
        self.fuse_fd = -1
        if fd >= 0:
            close(fd)
        for fd in self._stat_fds.values():
            os.close(fd)
        self._stat_fds.clear()

    def serve(self):
        """Answer requests until the mount goes away (unmount, forced unmount,
        DESTROY). A signal handler's exception propagates."""
        if self.fuse_fd < 0:
            raise RuntimeError("not mounted")
        while self._serve_one():
            pass

    def serve_one(self):
        """Answer one request; False when the connection has ended."""
        return self._serve_one()

    # ---- request handling ------------------------------------------------

    cdef bint _serve_one(self) except -1:
        cdef ssize_t n
        cdef int err
        cdef int fd = self.fuse_fd
        if self._destroyed or fd < 0:
            return False
        while True:
            with nogil:
                n = read(fd, self.buf, BUF_SIZE)
                err = errno
            if n >= 0:
                break
            if err == EINTR:
                PyErr_CheckSignals()
                continue
            if err == ENOENT:   # the request was interrupted before we read it
                continue
            if err == ENODEV:   # unmounted, or the connection was aborted
                return False
            raise OSError(err, f"read /dev/fuse: {os.strerror(err)}")
        if n < <ssize_t>sizeof(fuse_in_header):
            raise OSError(EINVAL, f"short FUSE request ({n} bytes)")
        self.requests += 1
        self._dispatch(<fuse_in_header *>self.buf, self.buf + sizeof(fuse_in_header),
                       <size_t>n - sizeof(fuse_in_header))
        return not self._destroyed

    cdef int _send(self, uint64_t unique, int error, const void *body, size_t size) except -1:
        cdef fuse_out_header *h = <fuse_out_header *>self.reply
        cdef size_t total = sizeof(fuse_out_header) + size
        cdef ssize_t n
        h.len = <uint32_t>total
        h.error = -error
        h.unique = unique
        if size:
            memcpy(self.reply + sizeof(fuse_out_header), body, size)
        n = write(self.fuse_fd, self.reply, total)
        # ENOENT: the caller was interrupted and gave up on the request.
        if n < 0 and errno != ENOENT and errno != ENODEV:
            _raise_errno("write /dev/fuse")
        return 0

    cdef int _dispatch(self, fuse_in_header *h, unsigned char *body, size_t size) except -1:
        cdef uint32_t op = h.opcode
        if op == FUSE_IOCTL:
            return self._ioctl(h, body, size)
        if op == FUSE_INIT:
            return self._init(h, body, size)
        if op == FUSE_FORGET or op == FUSE_BATCH_FORGET or op == FUSE_INTERRUPT:
            return 0  # no reply expected; every request is answered at once anyway
        if op == FUSE_LOOKUP:
            return self._lookup(h, body, size)
        if op == FUSE_GETATTR:
            return self._getattr(h)
        if op == FUSE_OPEN:
            return self._open(h)
        if op == FUSE_OPENDIR:
            return self._opendir(h)
        if op == FUSE_READDIR:
            return self._readdir(h, body, size)
        if op == FUSE_STATFS:
            return self._statfs(h)
        if (op == FUSE_RELEASE or op == FUSE_RELEASEDIR or op == FUSE_FLUSH
                or op == FUSE_FSYNC or op == FUSE_FSYNCDIR or op == FUSE_ACCESS):
            return self._send(h.unique, 0, NULL, 0)
        if op == FUSE_SETATTR:
            return self._send(h.unique, EPERM, NULL, 0)
        if op == FUSE_READ or op == FUSE_WRITE:
            # The kernel's device has no read/write: EINVAL, as vfs_read gives.
            return self._send(h.unique, EINVAL, NULL, 0)
        if op == FUSE_DESTROY:
            self._destroyed = True
            return self._send(h.unique, 0, NULL, 0)
        return self._send(h.unique, ENOSYS, NULL, 0)

    cdef int _init(self, fuse_in_header *h, unsigned char *body, size_t size) except -1:
        cdef fuse_init_in ini
        cdef fuse_init_out out
        memset(&ini, 0, sizeof(ini))
        memcpy(&ini, body, min(size, sizeof(ini)))
        memset(&out, 0, sizeof(out))
        out.major = FUSE_MAJOR
        if ini.major != FUSE_MAJOR:
            # Tell the kernel which major we speak; a 7.x kernel retries.
            self._send(h.unique, 0, &out, 8)
            return 0
        self.kernel_minor = ini.minor
        self.kernel_flags = ini.flags
        if ini.flags & FUSE_INIT_EXT:
            self.kernel_flags |= (<uint64_t>ini.flags2) << 32
        out.minor = min(ini.minor, <uint32_t>FUSE_MINOR_SPOKEN)
        out.max_readahead = ini.max_readahead
        out.max_background = 16
        out.congestion_threshold = 12
        out.max_write = 4096
        out.time_gran = 1
        if (self.kernel_flags >> 37) & 1:
            out.flags = FUSE_INIT_EXT
            out.flags2 = FUSE_PASSTHROUGH_FLAG2
            out.max_stack_depth = 1
        self._initialised = True
        return self._send(h.unique, 0, &out, sizeof(out))

    cdef void _fill_attr(self, fuse_attr *a, uint64_t node) noexcept:
        memset(a, 0, sizeof(fuse_attr))
        a.ino = node
        a.blksize = 4096
        if node == ROOT_ID:
            a.mode = S_IFDIR | 0o755
            a.nlink = 2
        else:
            a.mode = S_IFREG | 0o600
            a.nlink = 1
            a.size = self._file_size
            a.blocks = (self._file_size + 511) // 512

    cdef int _lookup(self, fuse_in_header *h, unsigned char *body, size_t size) except -1:
        cdef fuse_entry_out e
        cdef size_t name_len = 0
        while name_len < size and body[name_len] != 0:
            name_len += 1
        if h.nodeid != ROOT_ID or body[:name_len] != _FILE_NAME_B:
            return self._send(h.unique, ENOENT, NULL, 0)
        memset(&e, 0, sizeof(e))
        e.nodeid = FILE_ID
        e.generation = 1
        e.entry_valid = 1
        e.attr_valid = 1
        self._fill_attr(&e.attr, FILE_ID)
        return self._send(h.unique, 0, &e, sizeof(e))

    cdef int _getattr(self, fuse_in_header *h) except -1:
        cdef fuse_attr_out a
        if h.nodeid != ROOT_ID and h.nodeid != FILE_ID:
            return self._send(h.unique, ENOENT, NULL, 0)
        memset(&a, 0, sizeof(a))
        a.attr_valid = 1
        self._fill_attr(&a.attr, h.nodeid)
        return self._send(h.unique, 0, &a, sizeof(a))

    cdef int _open(self, fuse_in_header *h) except -1:
        cdef fuse_open_out o
        if h.nodeid != FILE_ID:
            return self._send(h.unique, ENOENT, NULL, 0)
        memset(&o, 0, sizeof(o))
        # NOFLUSH: close(2) then sends nothing the caller must wait for, so
        # closing the file with the GIL held cannot stall an in-process daemon.
        # DIRECT_IO: read(2)/write(2) come to the daemon (which refuses them)
        # instead of passing through to the backing file, where a hole would
        # read as zeros; mmap still passes through (the kernel checks
        # passthrough first for mmap, DIRECT_IO first for read/write).
        o.open_flags = FOPEN_NOFLUSH | FOPEN_DIRECT_IO
        if self.backing_id >= 0:
            o.open_flags |= FOPEN_PASSTHROUGH
            o.backing_id = self.backing_id
        return self._send(h.unique, 0, &o, sizeof(o))

    cdef int _opendir(self, fuse_in_header *h) except -1:
        cdef fuse_open_out o
        if h.nodeid != ROOT_ID:
            return self._send(h.unique, ENOTDIR, NULL, 0)
        memset(&o, 0, sizeof(o))
        return self._send(h.unique, 0, &o, sizeof(o))

    cdef size_t _dirent(self, unsigned char *p, uint64_t ino, uint64_t off, uint32_t kind,
                        const char *name) noexcept:
        cdef fuse_dirent *d = <fuse_dirent *>p
        cdef size_t nl = strlen(name)
        cdef size_t rec = (sizeof(fuse_dirent) + nl + 7) & ~(<size_t>7)
        memset(p, 0, rec)
        d.ino = ino
        d.off = off
        d.namelen = <uint32_t>nl
        d.type = kind
        memcpy(p + sizeof(fuse_dirent), name, nl)
        return rec

    cdef int _readdir(self, fuse_in_header *h, unsigned char *body, size_t size) except -1:
        cdef fuse_read_in r
        cdef unsigned char tmp[256]
        cdef size_t n = 0
        memset(&r, 0, sizeof(r))
        memcpy(&r, body, min(size, sizeof(r)))
        if r.offset < 1:
            n += self._dirent(tmp + n, ROOT_ID, 1, DT_DIR, b".")
        if r.offset < 2:
            n += self._dirent(tmp + n, ROOT_ID, 2, DT_DIR, b"..")
        if r.offset < 3:
            n += self._dirent(tmp + n, FILE_ID, 3, DT_REG, b"mshv_vtl")
        if n > r.size:
            n = 0  # the kernel always asks for at least a page
        return self._send(h.unique, 0, tmp, n)

    cdef int _statfs(self, fuse_in_header *h) except -1:
        cdef fuse_kstatfs s
        memset(&s, 0, sizeof(s))
        s.bsize = 4096
        s.frsize = 4096
        s.namelen = 255
        s.files = 2
        return self._send(h.unique, 0, &s, sizeof(s))

    cdef int _ioctl(self, fuse_in_header *h, unsigned char *body, size_t size) except -1:
        cdef fuse_ioctl_in *ii = <fuse_ioctl_in *>body
        cdef unsigned char out[16 + 56]  # fuse_ioctl_out, then the mshv_tdcall
        cdef fuse_ioctl_out *oo = <fuse_ioctl_out *>out
        cdef mshv_tdcall io
        cdef int cpu, rc
        if size < sizeof(fuse_ioctl_in):
            return self._send(h.unique, EINVAL, NULL, 0)
        if (ii.cmd & 0xFFFFFFFF) != TDCALL_CMD:
            return self._send(h.unique, ENOTTY, NULL, 0)
        if (ii.flags & FUSE_IOCTL_UNRESTRICTED or ii.in_size != TDCALL_SIZE
                or ii.out_size != TDCALL_SIZE or size < sizeof(fuse_ioctl_in) + TDCALL_SIZE):
            return self._send(h.unique, EINVAL, NULL, 0)
        cpu = self._cpu_of(h.pid)
        # No VP runs on that CPU: the kernel's answer for a missing VP.
        if cpu < 0 or <uint32_t>cpu >= self.vp_count:
            return self._send(h.unique, EINVAL, NULL, 0)
        memcpy(&io, body + sizeof(fuse_ioctl_in), sizeof(io))
        rc = self.ops.tdcall(self.ctx, <uint32_t>cpu, &io)
        self.tdcalls += 1
        if rc != 0:
            return self._send(h.unique, rc if rc > 0 else -rc, NULL, 0)
        memset(oo, 0, sizeof(fuse_ioctl_out))
        memcpy(out + sizeof(fuse_ioctl_out), &io, sizeof(io))
        return self._send(h.unique, 0, out, sizeof(out))

    cdef int _cpu_of(self, uint32_t tid) except -2:
        """The CPU thread ``tid`` runs on (it is blocked in our ioctl), or -1."""
        cdef cpu_set_t mask
        cdef int i, rc
        if tid == 0:
            return -1  # a caller outside our pid namespace
        rc = sched_getaffinity(<int>tid, sizeof(cpu_set_t), &mask)
        if rc == 0 and CPU_COUNT(&mask) == 1:
            for i in range(CPU_SETSIZE):
                if CPU_ISSET(i, &mask):
                    return i
        return self._stat_cpu(tid)

    cdef int _stat_cpu(self, uint32_t tid) except -2:
        cdef char text[1024]
        cdef ssize_t n = -1
        cdef int fd, attempt
        cdef bytes path
        for attempt in range(2):
            fd = self._stat_fds.get(tid, -1)
            if fd < 0:
                path = f"/proc/{tid}/stat".encode()
                fd = open(path, O_RDONLY | O_CLOEXEC)
                if fd < 0:
                    return -1
                if len(self._stat_fds) >= 256:
                    for old in self._stat_fds.values():
                        os.close(old)
                    self._stat_fds.clear()
                self._stat_fds[tid] = fd
            n = pread(fd, text, sizeof(text) - 1, 0)
            if n > 0:
                break
            # A dead thread whose id was reused: the old fd fails, look again.
            del self._stat_fds[tid]
            close(fd)
        if n <= 0:
            return -1
        line = text[:n]
        fields = line[line.rfind(b")") + 2:].split()
        try:
            return int(fields[36])  # field 39, "processor"
        except (IndexError, ValueError):
            return -1


# ---- a watchdog that needs no GIL -------------------------------------------

cdef struct watchdog_state:
    int pipe_rd
    int pipe_wr
    int timeout_ms
    int fired
    char *path


cdef void *_watchdog_main(void *arg) noexcept nogil:
    cdef watchdog_state *w = <watchdog_state *>arg
    cdef pollfd p
    cdef int rc
    p.fd = w.pipe_rd
    p.events = POLLIN
    p.revents = 0
    while True:
        rc = poll(&p, 1, w.timeout_ms)
        if rc < 0 and errno == EINTR:
            continue
        break
    if rc == 0:
        w.fired = 1
        umount2(w.path, MNT_FORCE | MNT_DETACH)
    return NULL


cdef class Watchdog:
    """Force-unmount ``path`` after ``timeout`` seconds unless disarmed first.
    It belongs to the process that made it: in a forked child, ``disarm``
    and garbage collection leave the parent's watchdog armed.

    A plain C thread: it works while the interpreter is stuck, e.g. a caller
    blocked in an ioctl with the GIL held while the in-process daemon waits
    for that GIL. Aborting the FUSE connection fails the blocked call.
    """
    cdef watchdog_state w
    cdef pthread_t thread
    cdef bint running
    cdef int owner           # the process whose thread it is (a forked child has none)

    def __cinit__(self, path, double timeout):
        cdef int fds[2]
        cdef bytes p = os.fsencode(path)
        self.w.pipe_rd = -1
        self.w.pipe_wr = -1
        if not timeout > 0:  # NaN included
            raise ValueError("timeout must be positive")
        if pipe2(fds, O_CLOEXEC) != 0:
            _raise_errno("pipe2")
        self.w.pipe_rd = fds[0]
        self.w.pipe_wr = fds[1]
        # poll(2) takes an int of milliseconds: round up, cap at INT_MAX
        # (a double out of int range converts with undefined behaviour).
        self.w.timeout_ms = <int>min(ceil(timeout * 1000), <double>INT_MAX)
        self.w.path = strdup(p)
        if self.w.path == NULL:
            raise MemoryError()
        if pthread_create(&self.thread, NULL, _watchdog_main, &self.w) != 0:
            raise OSError("cannot start the watchdog thread")
        self.owner = getpid()
        self.running = True

    cdef bint _mine(self) noexcept:
        # After fork the child shares the pipe but not the thread: writing
        # would disarm the parent's watchdog, joining would wait for a thread
        # that does not exist here.
        if self.running and getpid() != self.owner:
            self.running = False
        return self.running

    @property
    def fired(self):
        """True when the timeout expired and the mount was forced away."""
        return bool(self.w.fired)

    def disarm(self):
        """Stop the watchdog (idempotent); returns whether it had fired."""
        cdef char c = 0
        if self._mine():
            write(self.w.pipe_wr, &c, 1)
            with nogil:
                pthread_join(self.thread, NULL)
            self.running = False
        return bool(self.w.fired)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.disarm()
        return False

    def __dealloc__(self):
        cdef char c = 0
        if self._mine():
            write(self.w.pipe_wr, &c, 1)
            pthread_join(self.thread, NULL)
        if self.w.pipe_rd >= 0:
            close(self.w.pipe_rd)
        if self.w.pipe_wr >= 0:
            close(self.w.pipe_wr)
        free(self.w.path)
