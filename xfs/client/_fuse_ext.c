/*
 * xfs.client._fuse_ext: the FUSE lock and fallocate operations pyfuse3 leaves out.
 *
 * pyfuse3 builds a `struct fuse_lowlevel_ops` without getlk, setlk, flock and
 * fallocate and hands it to fuse_session_new().  This module defines
 * fuse_session_new() itself.  Loaded with RTLD_GLOBAL before pyfuse3, it comes
 * first in the global symbol scope, so pyfuse3's reference binds here.  We
 * copy pyfuse3's table into a full-size one, add our operations, wrap flush
 * and release (to pass on fi->lock_owner and fi->flock_release, which pyfuse3
 * drops) and call libfuse's real fuse_session_new(), which copies the table.
 *
 * Our callbacks run in pyfuse3's trio thread, inside fuse_session_process_buf().
 * Each one hands the request to a Python callable registered by
 * xfs.client.fuse_ext; Python answers later through reply_err()/reply_lock().
 * If the hand-off fails, the request is answered with EIO here, so the kernel
 * never waits forever.
 *
 * Only sessions created after set_handlers() (fuse_ext.install()) get the extra
 * operations; others are left exactly as pyfuse3 built them.
 *
 * The init operation is wrapped too: after pyfuse3's, it asks for FUSE_CAP_DONT_MASK,
 * so the kernel leaves the umask to us (it sends the requested mode and the umask
 * apart). The MRC then applies the umask, except under a default ACL, as POSIX.1e
 * wants (posix_acl_create); without it the kernel would apply the umask itself.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#define FUSE_USE_VERSION 35

#include <Python.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <stdint.h>
#include <string.h>

/* The kernel's OFFSET_MAX: a lock that runs to the end of the file. */
#define LOCK_EOF INT64_MAX

typedef struct fuse_session *(*session_new_fn)(struct fuse_args *,
                                              const struct fuse_lowlevel_ops *,
                                              size_t, void *);
typedef void (*file_op_fn)(fuse_req_t, fuse_ino_t, struct fuse_file_info *);

typedef void (*init_fn)(void *, struct fuse_conn_info *);

static file_op_fn inner_flush;   /* pyfuse3's flush, chained after our hook */
static file_op_fn inner_release; /* pyfuse3's release */
static init_fn inner_init;       /* pyfuse3's init */
static unsigned long sessions_hooked;
static int umask_by_fs; /* FUSE_CAP_DONT_MASK negotiated by the last session's init */

static PyObject *dispatch_cb; /* dispatch(kind, req, *args) -> True once it owns req */
static PyObject *closing_cb;  /* closing(fh, owner, flock_release, is_release) */
static PyObject *interrupt_cb; /* interrupted(req) */

static session_new_fn real_session_new(void)
{
    void *fn = dlvsym(RTLD_NEXT, "fuse_session_new", "FUSE_3.0");
    if (fn == NULL)
        fn = dlsym(RTLD_NEXT, "fuse_session_new");
    return (session_new_fn)fn;
}

/* ------------------------------------------------------------------ */
/* Hand-off to Python                                                   */

static void on_interrupt(fuse_req_t req, void *data)
{
    (void)data;
    PyGILState_STATE gil = PyGILState_Ensure();
    if (interrupt_cb != NULL) {
        PyObject *res = PyObject_CallFunction(interrupt_cb, "K",
                                              (unsigned long long)(uintptr_t)req);
        if (res == NULL)
            PyErr_WriteUnraisable(interrupt_cb);
        Py_XDECREF(res);
    }
    PyGILState_Release(gil);
}

/* Calls dispatch(kind, req, *args); answers EIO itself if that fails. */
static void dispatch(fuse_req_t req, const char *kind, PyObject *args)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int handed_off = 0;
    if (args != NULL && dispatch_cb != NULL) {
        PyObject *res = PyObject_Call(dispatch_cb, args, NULL);
        if (res == NULL)
            PyErr_WriteUnraisable(dispatch_cb);
        else
            handed_off = PyObject_IsTrue(res) == 1;
        if (PyErr_Occurred())
            PyErr_WriteUnraisable(dispatch_cb);
        Py_XDECREF(res);
    } else if (args == NULL) {
        PyErr_WriteUnraisable(NULL);
    }
    Py_XDECREF(args);
    if (handed_off) {
        /* Interrupts (a signal to a process blocked in F_SETLKW) reach Python.
         * Registered after the hand-off: Python never replies synchronously
         * from dispatch(), so `req` is still alive here. */
        fuse_req_interrupt_func(req, on_interrupt, NULL);
    } else {
        fprintf(stderr, "xfs fuse_ext: %s request not handed to Python, replying EIO\n",
                kind);
        fuse_reply_err(req, EIO);
    }
    PyGILState_Release(gil);
}

static void lock_range(const struct flock *lock, long long *start, long long *end)
{
    *start = (long long)lock->l_start;
    *end = lock->l_len == 0 ? LOCK_EOF : (long long)(lock->l_start + lock->l_len - 1);
}

static void xfs_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
                      struct flock *lock)
{
    long long start, end;
    lock_range(lock, &start, &end);
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *args = Py_BuildValue("(sKKKKiLLi)", "getlk", (unsigned long long)(uintptr_t)req,
                                   (unsigned long long)ino, (unsigned long long)fi->fh,
                                   (unsigned long long)fi->lock_owner, (int)lock->l_type,
                                   start, end, (int)lock->l_pid);
    dispatch(req, "getlk", args);
    PyGILState_Release(gil);
}

static void xfs_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
                      struct flock *lock, int sleep)
{
    long long start, end;
    lock_range(lock, &start, &end);
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *args = Py_BuildValue("(sKKKKiLLiO)", "setlk", (unsigned long long)(uintptr_t)req,
                                   (unsigned long long)ino, (unsigned long long)fi->fh,
                                   (unsigned long long)fi->lock_owner, (int)lock->l_type,
                                   start, end, (int)lock->l_pid,
                                   sleep ? Py_True : Py_False);
    dispatch(req, "setlk", args);
    PyGILState_Release(gil);
}

static void xfs_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *args = Py_BuildValue("(sKKKKi)", "flock", (unsigned long long)(uintptr_t)req,
                                   (unsigned long long)ino, (unsigned long long)fi->fh,
                                   (unsigned long long)fi->lock_owner, op);
    dispatch(req, "flock", args);
    PyGILState_Release(gil);
}

static void xfs_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset,
                          off_t length, struct fuse_file_info *fi)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *args = Py_BuildValue("(sKKKiLL)", "fallocate", (unsigned long long)(uintptr_t)req,
                                   (unsigned long long)ino, (unsigned long long)fi->fh,
                                   mode, (long long)offset, (long long)length);
    dispatch(req, "fallocate", args);
    PyGILState_Release(gil);
}

/* Runs the synchronous closing hook; its failures are reported, never raised. */
static void call_closing(struct fuse_file_info *fi, int flock_release, int is_release)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    if (closing_cb != NULL) {
        PyObject *res = PyObject_CallFunction(closing_cb, "KKOO",
                                              (unsigned long long)fi->fh,
                                              (unsigned long long)fi->lock_owner,
                                              flock_release ? Py_True : Py_False,
                                              is_release ? Py_True : Py_False);
        if (res == NULL)
            PyErr_WriteUnraisable(closing_cb);
        Py_XDECREF(res);
    }
    PyGILState_Release(gil);
}

static void xfs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    call_closing(fi, 0, 0);
    if (inner_flush != NULL)
        inner_flush(req, ino, fi);
    else
        fuse_reply_err(req, 0);
}

static void xfs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    call_closing(fi, fi->flock_release, 1);
    if (inner_release != NULL)
        inner_release(req, ino, fi);
    else
        fuse_reply_err(req, 0);
}

static void xfs_init(void *userdata, struct fuse_conn_info *conn)
{
    if (inner_init != NULL)
        inner_init(userdata, conn);
    umask_by_fs = (conn->capable & FUSE_CAP_DONT_MASK) != 0;
    if (umask_by_fs)
        conn->want |= FUSE_CAP_DONT_MASK;
}

/* ------------------------------------------------------------------ */
/* The hook                                                             */

__attribute__((visibility("default"))) struct fuse_session *
fuse_session_new(struct fuse_args *args, const struct fuse_lowlevel_ops *op, size_t op_size,
                 void *userdata)
{
    session_new_fn real = real_session_new();
    if (real == NULL) {
        fprintf(stderr, "xfs fuse_ext: libfuse's fuse_session_new not found: %s\n", dlerror());
        return NULL;
    }
    if (dispatch_cb == NULL) /* install() not called: a plain pyfuse3 session */
        return real(args, op, op_size, userdata);
    struct fuse_lowlevel_ops ops;
    memset(&ops, 0, sizeof(ops));
    memcpy(&ops, op, op_size < sizeof(ops) ? op_size : sizeof(ops));
    inner_flush = ops.flush;
    inner_release = ops.release;
    inner_init = ops.init;
    ops.init = xfs_init;
    ops.flush = xfs_flush;
    ops.release = xfs_release;
    ops.getlk = xfs_getlk;
    ops.setlk = xfs_setlk;
    ops.flock = xfs_flock;
    ops.fallocate = xfs_fallocate;
    struct fuse_session *se = real(args, &ops, sizeof(ops), userdata);
    if (se != NULL)
        sessions_hooked++;
    return se;
}

/* ------------------------------------------------------------------ */
/* Python functions                                                     */

static PyObject *py_set_handlers(PyObject *self, PyObject *args)
{
    PyObject *dispatch_obj, *closing_obj, *interrupt_obj;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOO", &dispatch_obj, &closing_obj, &interrupt_obj))
        return NULL;
    PyObject *objs[3] = {dispatch_obj, closing_obj, interrupt_obj};
    for (int i = 0; i < 3; i++) {
        if (objs[i] != Py_None && !PyCallable_Check(objs[i])) {
            PyErr_SetString(PyExc_TypeError, "handlers must be callables or None");
            return NULL;
        }
    }
    PyObject **slots[3] = {&dispatch_cb, &closing_cb, &interrupt_cb};
    for (int i = 0; i < 3; i++) {
        PyObject *old = *slots[i];
        *slots[i] = objs[i] == Py_None ? NULL : Py_NewRef(objs[i]);
        Py_XDECREF(old);
    }
    Py_RETURN_NONE;
}

static PyObject *py_reply_err(PyObject *self, PyObject *args)
{
    unsigned long long req;
    int err;
    (void)self;
    if (!PyArg_ParseTuple(args, "Ki", &req, &err))
        return NULL;
    return PyLong_FromLong(fuse_reply_err((fuse_req_t)(uintptr_t)req, err));
}

static PyObject *py_reply_lock(PyObject *self, PyObject *args)
{
    unsigned long long req;
    int type, pid;
    long long start, end;
    (void)self;
    if (!PyArg_ParseTuple(args, "KiLLi", &req, &type, &start, &end, &pid))
        return NULL;
    if (start < 0 || end < start) {
        PyErr_SetString(PyExc_ValueError, "lock range must have 0 <= start <= end");
        return NULL;
    }
    struct flock lock;
    memset(&lock, 0, sizeof(lock));
    lock.l_type = (short)type;
    lock.l_whence = SEEK_SET;
    lock.l_start = start;
    lock.l_len = end == LOCK_EOF ? 0 : end - start + 1;
    lock.l_pid = pid;
    return PyLong_FromLong(fuse_reply_lock((fuse_req_t)(uintptr_t)req, &lock));
}

static PyObject *py_sessions_hooked(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyLong_FromUnsignedLong(sessions_hooked);
}

static PyObject *py_umask_by_fs(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyBool_FromLong(umask_by_fs);
}

static PyObject *py_hook_is_default(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    void *found = dlsym(RTLD_DEFAULT, "fuse_session_new");
    return PyBool_FromLong(found == (void *)fuse_session_new);
}

static PyMethodDef methods[] = {
    {"set_handlers", py_set_handlers, METH_VARARGS,
     "set_handlers(dispatch, closing, interrupted): register the Python side."},
    {"reply_err", py_reply_err, METH_VARARGS,
     "reply_err(req, errno) -> int: answer a request with an error (0: success)."},
    {"reply_lock", py_reply_lock, METH_VARARGS,
     "reply_lock(req, type, start, end, pid) -> int: answer a getlk request."},
    {"sessions_hooked", py_sessions_hooked, METH_NOARGS,
     "sessions_hooked() -> int: FUSE sessions created through the hook so far."},
    {"umask_by_fs", py_umask_by_fs, METH_NOARGS,
     "umask_by_fs() -> bool: whether the kernel leaves the umask to the file system."},
    {"hook_is_default", py_hook_is_default, METH_NOARGS,
     "hook_is_default() -> bool: whether fuse_session_new resolves to the hook globally."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fuse_ext",
    "FUSE lock and fallocate operations added to pyfuse3's session.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fuse_ext(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "LOCK_EOF", (long)LOCK_EOF) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
