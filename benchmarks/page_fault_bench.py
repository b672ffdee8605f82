"""What this machine charges for a page of memory written for the first time, the cost under most of a
slice instance's start (issue 12 target 4): an instance forked from its template copies ~650 pages it
shares with the template (CPython writes a reference count into every object it touches), so the
deploy of 300 instances is ~200,000 page copies whatever this project's Python does.

    uv run python benchmarks/page_fault_bench.py                 # 5 rounds over 64 MiB
    uv run python benchmarks/page_fault_bench.py --rounds 9 --mib 256

Per 4 KiB page, CPU time of the process doing it (median of the rounds; the load average is printed):
- fresh: the first write of anonymous memory the process never had (the kernel zeroes a page; on a
  virtual machine the host may also have to back it);
- again: the same after `madvise(MADV_DONTNEED)` gave the pages back (memory the machine has used);
- copy: a child's first write of a page it shares with its parent after `fork` (copy-on-write: what an
  instance pays for each page of its template it writes);
- copy, populated: the same copies made by one `madvise(MADV_POPULATE_WRITE)` over the range (Linux
  5.14+): the page copy without a fault per page. The ratio against "copy" is what a fault's own
  entry and exit cost on this machine;
- a write to a page already there (the loop's own cost, subtracted from the others).
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import statistics
import sys
import time

PAGE = mmap.PAGESIZE
MADV_DONTNEED = 4
MADV_POPULATE_WRITE = 23

_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def madvise(address: int, length: int, advice: int) -> None:
    if _libc.madvise(address, length, advice) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"madvise({advice}): {os.strerror(errno)}")


def write_each_page(memory: mmap.mmap, value: int) -> float:
    """CPU seconds to write one byte into every page of `memory`."""
    started = time.process_time()
    for offset in range(0, len(memory), PAGE):
        memory[offset] = value
    return time.process_time() - started


def in_child(measure: object) -> float:
    """`measure()` (CPU seconds) run in a child just forked, its result sent back through a pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            os.write(write_end, repr(measure()).encode())  # type: ignore[operator]
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        figure = float(reader.read())
    os.waitpid(pid, 0)
    return figure


def one_round(size: int) -> dict[str, float]:
    """Microseconds per page for each way of writing it (see the module's docstring)."""
    pages = size // PAGE
    memory = mmap.mmap(-1, size)
    address = ctypes.addressof((ctypes.c_char * size).from_buffer(memory))
    figures = {"fresh": write_each_page(memory, 1)}
    figures["loop"] = write_each_page(memory, 2)
    madvise(address, size, MADV_DONTNEED)
    figures["again"] = write_each_page(memory, 3)
    figures["copy"] = in_child(lambda: write_each_page(memory, 4))

    def populate() -> float:
        started = time.process_time()
        madvise(address, size, MADV_POPULATE_WRITE)
        return time.process_time() - started

    try:
        figures["copy, populated"] = in_child(populate)
    except ValueError:  # the child could not madvise (a kernel before 5.14): it wrote nothing
        pass
    loop = figures["loop"]
    return {
        name: (seconds - (0 if name in ("loop", "copy, populated") else loop)) / pages * 1e6
        for name, seconds in figures.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mib", type=int, default=64, help="memory written per round")
    opts = parser.parse_args()
    loads, rounds = [], []
    for number in range(1, opts.rounds + 1):
        loads.append(os.getloadavg()[0])
        rounds.append(one_round(opts.mib * 2**20))
        shown = ", ".join(f"{name} {value:.2f}" for name, value in rounds[-1].items())
        print(f"round {number} (load average {loads[-1]:.2f}): µs per page: {shown}", flush=True)
    names = [name for name in rounds[0] if all(name in r for r in rounds)]
    median = {name: statistics.median(r[name] for r in rounds) for name in names}
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(
        f"\nuv run python benchmarks/page_fault_bench.py --rounds {opts.rounds} --mib {opts.mib}  ({stamp};"
        f" {os.uname().release}; Python {sys.version.split()[0]}; load averages"
        f" {', '.join(f'{load:.2f}' for load in loads)})\n"
    )
    print("| per 4 KiB page (median of rounds) | µs |")
    print("| --- | --- |")
    for name in names:
        print(f"| {name} | {median[name]:.2f} |")
    if "copy, populated" in median and median["copy, populated"] > 0:
        print(f"| copy by fault against copy populated | {median['copy'] / median['copy, populated']:.2f}x |")
    if median["copy"] > 0:
        print(f"| 650 copies (an instance's start) | {650 * median['copy'] / 1000:.2f} ms |")


if __name__ == "__main__":
    main()
