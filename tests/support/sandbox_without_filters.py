"""Runs a :class:`PythonSandbox` in a process whose kernel "lacks" seccomp and Landlock:
a seccomp filter installed here first makes both system calls fail with ENOSYS, as on a
kernel built without them (filters are inherited by the worker)::

    python -m tests.support.sandbox_without_filters require|auto

prints ``REFUSED <message>``, or ``RAN <value>``, ``WARNED`` and ``MISSING <names>``.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import sys
import warnings

from agentplex.agent import PythonSandbox, SandboxError
from agentplex.agent._sandbox_worker import _SECCOMP, seccomp_program


def disable_filters() -> None:
    arch = _SECCOMP[os.uname().machine]
    program = seccomp_program({arch[3]: errno.ENOSYS, 444: errno.ENOSYS})
    assert program is not None
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS

    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(program, len(program))
    prog = Fprog(len(program) // 8, ctypes.addressof(buf))
    # PR_SET_SECCOMP, SECCOMP_MODE_FILTER: prctl, since the seccomp call is what we deny
    assert libc.prctl(22, 2, ctypes.byref(prog), 0, 0) == 0


async def main(confinement: str) -> None:
    box = PythonSandbox([], timeout=30, confinement=confinement)  # type: ignore[arg-type]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = await box.run("6 * 7")
            except SandboxError as exc:
                print("REFUSED", exc)
                return
        print("RAN", result.value if result.error is None else result.error)
        if any("kernel filters" in str(w.message) for w in caught):
            print("WARNED")
        print("MISSING", ",".join(sorted(box.missing_filters)))
    finally:
        await box.close()


if __name__ == "__main__":
    disable_filters()
    asyncio.run(main(sys.argv[1]))
