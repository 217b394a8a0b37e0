#!/usr/bin/env python3
"""Compile CUDA sources with NVRTC for each given GPU architecture, without a GPU.

    python3 nvrtc.py --nvrtc DIR SOURCES_DIR sm_80 sm_90 ...

DIR holds NVIDIA's PyPI wheels unpacked (nvidia-cuda-nvrtc-cu12 for libnvrtc,
nvidia-cuda-runtime-cu12 and nvidia-cuda-nvcc-cu12 for the headers `mma.h` and `crt/mma.h`
need): run.sh fetches them. Prints one line an architecture (sources compiled, failed; the
`wmma.mma` instructions in the tensor-core kernels' PTX), each failure's first errors, and the
kernels whose registers spill to local memory (ptxas' report; `--usage FILE` writes every
kernel's registers and spill stores).
A bf16 tensor-core kernel failing before sm_80 is expected (no bf16 `wmma` there; bertlab
asks the device for a bf16 `cmma` configuration before it launches one) and is counted apart.
Exit status 1 on any other failure.
"""
import argparse
import ctypes
import glob
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor


def compile_one(task):
    path, arch, nvrtc = task
    lib = ctypes.CDLL(os.path.join(nvrtc, "nvidia/cuda_nvrtc/lib/libnvrtc.so.12"))
    includes = [os.path.join(nvrtc, d) for d in ("nvidia/cuda_runtime/include", "nvidia/cuda_nvcc/include")]
    prog = ctypes.c_void_p()
    lib.nvrtcCreateProgram(ctypes.byref(prog), open(path, "rb").read(), path.encode(), 0, None, None)
    # A real architecture with ptxas' report: NVRTC then assembles the PTX too, and says each
    # kernel's registers and spills (what occupancy and local-memory traffic depend on).
    options = [f"--gpu-architecture={arch}".encode(), b"--ptxas-options=-v"]
    options += [f"--include-path={i}".encode() for i in includes]
    status = lib.nvrtcCompileProgram(prog, len(options), (ctypes.c_char_p * len(options))(*options))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    text = log.value.decode(errors="replace")
    errors = [line for line in text.splitlines() if "error" in line]
    registers = re.search(r"Used (\d+) registers", text)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    usage = (int(registers.group(1)) if registers else None, int(spills.group(1)) if spills else 0)
    mma = 0
    if status == 0:
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetPTX(prog, ptx)
        mma = ptx.value.decode().count("wmma.mma")
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return path, status, errors[:3], mma, usage


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nvrtc", required=True)
    parser.add_argument("sources")
    parser.add_argument("archs", nargs="+")
    parser.add_argument("--usage", metavar="FILE", help="write each kernel's registers and spill stores (TSV)")
    args = parser.parse_args()
    sources = sorted(glob.glob(os.path.join(args.sources, "*.cu")))
    if not sources:
        sys.exit(f"no .cu files in {args.sources}")
    bad = False
    for arch in args.archs:
        ok, failed, expected, mma, spilling, usages = 0, [], 0, 0, [], []
        with ProcessPoolExecutor(os.cpu_count() or 2) as pool:
            for path, status, errors, count, usage in pool.map(compile_one, [(s, arch, args.nvrtc) for s in sources]):
                name = os.path.basename(path)
                if status == 0:
                    ok += 1
                    mma += count
                    usages.append((name[:-3], *usage))
                    if usage[1]:
                        spilling.append(f"{name[:-3]} ({usage[0]} registers, {usage[1]} B spilled)")
                    if "-cmma" in name and count == 0:
                        failed.append((name, ["no wmma.mma in the PTX of a tensor-core kernel"]))
                elif "-bf16-" in name and "-cmma" in name and int(arch.split("_")[1]) < 80:
                    expected += 1
                else:
                    failed.append((name, errors))
        print(f"{arch}: {ok} of {len(sources)} compiled ({mma} wmma.mma), {len(failed)} failed"
              + (f", {expected} bf16 tensor-core kernels not for this architecture" if expected else ""))
        for name, errors in failed:
            print(f"  FAILED {name}: {' | '.join(errors)}")
        if spilling:
            shown = "; ".join(spilling[:8]) + ("; …" if len(spilling) > 8 else "")
            print(f"  {len(spilling)} spill registers to local memory: {shown}")
        if args.usage:
            with open(args.usage, "a") as out:
                for name, registers, spilled in usages:
                    out.write(f"{arch}\t{name}\t{registers}\t{spilled}\n")
        bad = bad or bool(failed)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
