"""Check release wheels: each carries its import package and metadata only, and its native module links
neither torch nor a shared CUDA runtime or driver, only the system's C and C++ runtimes.

    python tools/wheel_check.py WHEEL...     # prints each wheel's size and tags; exit 1 on any problem

``extension_problems`` is also the test of the torch-free property (tests/test_wheel_check.py).
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys
import tempfile
import zipfile

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

# Shared libraries a module may need: glibc's and the compiler's runtimes (auditwheel's manylinux policies
# allow them; everything else would have to ship inside the wheel).
SYSTEM_LIBS = re.compile(r"(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s)\.so\.\d+|ld-linux.*\.so\.\d+")
# What fastppo must never need at run time: torch (one wheel serves every torch), CUDA's shared runtime
# and its libraries (the runtime is linked statically), the driver (loaded by the runtime when present).
FORBIDDEN_LIBS = re.compile(r"lib(torch|c10|shm)\w*\.so|libcuda(rt)?\.so|libnv\w+\.so|libcu(blas|dnn|fft|rand|sparse)\w*\.so")
# torch's C++ namespaces (at::, c10::, torch::), mangled; and the CUDA runtime or driver API left unresolved.
TORCH_SYMBOL = re.compile(r"^_ZN[KVRO]*(2at|3c10|5torch)\d")
CUDA_SYMBOL = re.compile(r"^cu(da)?[A-Z]\w+$")


def extension_problems(path: str | pathlib.Path) -> list[str]:
    """Why the shared object at ``path`` breaks fastppo's linking rules; empty when it keeps them."""
    problems = []
    with open(path, "rb") as f:
        elf = ELFFile(f)
        dynamic = next((s for s in elf.iter_sections() if isinstance(s, DynamicSection)), None)
        needed = [t.needed for t in dynamic.iter_tags() if t.entry.d_tag == "DT_NEEDED"] if dynamic else []
        for lib in needed:
            if FORBIDDEN_LIBS.search(lib):
                problems.append(f"needs {lib} as a shared library")
            elif not SYSTEM_LIBS.fullmatch(lib):
                problems.append(f"needs {lib}, which is not a system runtime library")
        dynsym = elf.get_section_by_name(".dynsym")
        for sym in dynsym.iter_symbols() if dynsym else ():
            undefined = sym["st_shndx"] == "SHN_UNDEF"
            if TORCH_SYMBOL.match(sym.name):
                problems.append(f"{'references' if undefined else 'defines'} the torch symbol {sym.name}")
            elif undefined and CUDA_SYMBOL.match(sym.name):
                problems.append(f"leaves the CUDA symbol {sym.name} to a shared library")
    return problems


def wheel_problems(wheel: pathlib.Path) -> list[str]:
    """Why ``wheel`` is not a clean fastppo release wheel: stray files, or a native module's problems."""
    dist, version = wheel.name.split("-")[:2]
    allowed = (f"{dist}/", f"{dist}-{version}.dist-info/")
    problems = []
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        problems += [f"carries {n}, outside the package" for n in names if not n.startswith(allowed)]
        modules = [n for n in names if re.fullmatch(rf"{dist}/_core\.[^/]*\.so", n)]
        if len(modules) != 1:
            problems.append(f"has {len(modules)} native modules {dist}/_core.*.so, expected 1")
        with tempfile.TemporaryDirectory() as tmp:
            for name in modules:
                problems += [f"{name} {p}" for p in extension_problems(zf.extract(name, tmp))]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("wheels", type=pathlib.Path, nargs="+")
    args = parser.parse_args(argv)
    failed = False
    for wheel in args.wheels:
        problems = wheel_problems(wheel)
        print(f"{wheel.name}: {wheel.stat().st_size / 2**20:.2f} MiB, {'ok' if not problems else 'FAILED'}")
        for p in problems:
            print(f"  - {p}")
        failed |= bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
