#!/usr/bin/env python3
"""An agent-like program for `cargo xtask demo`: it does what a coding
agent does (read and write its workspace, run tools) and then tries what a
misbehaving one would. Each line says what it tried and what happened."""
import ctypes
import errno
import os
import socket
import subprocess

libc = ctypes.CDLL(None, use_errno=True)


def attempt(what, action):
    try:
        result = action()
        print(f"  allowed  {what}" + (f": {result}" if result else ""))
    except OSError as e:
        print(f"  refused  {what}: {errno.errorcode.get(e.errno, e.errno)}")


def syscall(what, number, *args):
    ret = libc.syscall(number, *args)
    if ret < 0:
        err = ctypes.get_errno()
        print(f"  refused  {what}: {errno.errorcode.get(err, err)}")
    else:
        print(f"  allowed  {what}")


print(f"agent running as uid {os.getuid()}, gid {os.getgid()}, groups {os.getgroups()}")
print(f"session {os.environ.get('AGENTD_SESSION_ID')}, trace {os.environ.get('TRACEPARENT')}")
print("what a coding agent needs:")
attempt("write notes.md in the workspace", lambda: open("notes.md", "w").write("plan: refactor\n") and None)
attempt("read it back", lambda: open("notes.md").read().strip())
attempt("run a tool (ls)", lambda: subprocess.run(["/usr/bin/ls"], capture_output=True, text=True).stdout.split())
attempt("write to $TMPDIR", lambda: open(os.path.join(os.environ["TMPDIR"], "scratch"), "w").write("x") and None)
print("what it must not do:")
attempt("read /etc/shadow", lambda: open("/etc/shadow").read())
attempt("read the caller's home (/root)", lambda: os.listdir("/root"))
attempt("write /etc/cron.d/backdoor", lambda: open("/etc/cron.d/backdoor", "w"))
attempt("connect to a local service (127.0.0.1:9)", lambda: socket.create_connection(("127.0.0.1", 9), timeout=1))
attempt("create a setuid file", lambda: os.chmod("notes.md", 0o4755))
syscall("ptrace(PTRACE_ATTACH, 1)", 101, 16, 1, 0, 0)
syscall("bpf()", 321, 0, 0, 0)
syscall("unshare(CLONE_NEWUSER)", 272, 0x10000000)
syscall("io_uring_setup", 425, 1, 0)
leaked = [k for k in os.environ if k.startswith("DEMO_CALLER_")]
print(f"  caller variables visible: {leaked or 'none'}")
