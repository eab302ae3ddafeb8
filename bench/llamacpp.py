"""llama.cpp's own tools, built from the llama.cpp source that Kathan's engine runs.

The engine benchmarks compare Kathan with ``llama-server``, and show the ceiling that
``llama-batched-bench`` reaches, both built from the llama.cpp tree vendored in the
pinned llama-cpp-python sdist: the same commit, the same CMake defaults (OpenMP, shared
libraries, ``-march=native``) and the same AMX opt-out as the Makefile's build of the
Python package. The first run downloads that sdist with pip and compiles the two tools
(several minutes on 2 cores) into a cache directory; later runs reuse them.

    python -m bench.llamacpp            # build (if needed) and print the tools' directory
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

TOOLS = ("llama-server", "llama-batched-bench")


def cache_root() -> Path:
    """``$KATHAN_BENCH_CACHE``, else ``~/.cache/kathan-bench``."""
    env = os.environ.get("KATHAN_BENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "kathan-bench"


def _no_amx_flags() -> str:
    """The Makefile's AMX opt-out, when the compiler knows the flags."""
    flags = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    cc = os.environ.get("CC", "cc")
    probe = subprocess.run([cc, *flags.split(), "-E", "-"], input=b"", capture_output=True,
                           check=False)
    return flags if probe.returncode == 0 else ""


def _source(root: Path, pinned: str) -> Path:
    """The vendored llama.cpp tree of llama-cpp-python ``pinned``, unpacked once."""
    tree = root / f"llama-cpp-python-{pinned}" / "vendor" / "llama.cpp"
    if (tree / "CMakeLists.txt").exists():
        return tree
    downloads = root / "sdist"
    downloads.mkdir(parents=True, exist_ok=True)
    archive = downloads / f"llama_cpp_python-{pinned}.tar.gz"
    if not archive.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--no-binary", ":all:", f"llama-cpp-python=={pinned}",
                        "-d", str(downloads)], check=True)
    prefix = f"llama_cpp_python-{pinned}/vendor/llama.cpp/"
    unpacked = root / f"llama-cpp-python-{pinned}.partial"
    shutil.rmtree(unpacked, ignore_errors=True)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        for member in members:
            member.name = "vendor/llama.cpp/" + member.name[len(prefix):]
        tar.extractall(unpacked, members=members, filter="data")
    target = tree.parent.parent
    shutil.rmtree(target, ignore_errors=True)
    unpacked.rename(target)
    return tree


def tools_dir(root: Path | None = None) -> Path:
    """The directory holding ``llama-server`` and ``llama-batched-bench`` built from the
    installed llama-cpp-python's vendored source; builds them the first time."""
    pinned = version("llama-cpp-python")
    root = root or cache_root()
    build = root / f"build-{pinned}"
    bin_dir = build / "bin"
    if all((bin_dir / tool).exists() for tool in TOOLS):
        return bin_dir
    source = _source(root, pinned)
    flags = _no_amx_flags()
    print(f"building {', '.join(TOOLS)} from llama-cpp-python {pinned}'s llama.cpp "
          f"into {build} (once; several minutes)", file=sys.stderr, flush=True)
    subprocess.run([
        "cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TOOLS=ON",
        "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
        # No web UI: nothing is fetched from the network at build time.
        "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_OPENSSL=OFF",
        f"-DCMAKE_C_FLAGS={flags}", f"-DCMAKE_CXX_FLAGS={flags}",
    ], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build), "--parallel", str(os.cpu_count() or 1),
                    "--target", *TOOLS], check=True, stdout=subprocess.DEVNULL)
    return bin_dir


if __name__ == "__main__":
    print(tools_dir())
