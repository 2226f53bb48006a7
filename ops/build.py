"""Extension modules for ``setup.py``: the compiled bev_pool and ms_deform_attn kernels.

``get_extensions(root)`` returns ``(ext_modules, cmdclass)``:

* ``bev_ddp._ops_cpu`` (C++, OpenMP) is always built;
* ``bev_ddp._ops_cuda`` is built when a CUDA build of torch and a CUDA toolkit (``CUDA_HOME`` with
  ``bin/nvcc``) are present, or when ``FORCE_CUDA=1``.  ``BEV_DDP_CPU_ONLY=1`` skips it.

Without a visible GPU and with ``TORCH_CUDA_ARCH_LIST`` unset, the CUDA kernels are compiled for
compute capabilities 8.0 and 9.0 (A100, H100/H200) to keep the build short, plus PTX of 9.0 so
that newer GPUs can JIT-compile the kernels instead of failing with "no kernel image".
"""
from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"  # +PTX: newer GPUs JIT-compile the 9.0 code

CPU_SOURCES = ["bindings.cpp", "bev_pool/bev_pool_cpu.cpp", "ms_deform_attn/ms_deform_attn_cpu.cpp"]
CUDA_SOURCES = ["bindings.cpp", "bev_pool/bev_pool_cuda.cu", "ms_deform_attn/ms_deform_attn_cuda.cu"]
CXX_FLAGS = ["-O3", "-fopenmp"]  # torch 2.14 headers need C++20; BuildExtension adds -std=c++20
NVCC_FLAGS = ["-O3", "-lineinfo"]


def _want_cuda() -> bool:
    if os.environ.get("BEV_DDP_CPU_ONLY") == "1":
        return False
    if os.environ.get("FORCE_CUDA") == "1":
        return True
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    has_nvcc = CUDA_HOME is not None and (Path(CUDA_HOME) / "bin" / "nvcc").exists()
    return torch.version.cuda is not None and has_nvcc


def get_extensions(root: str | os.PathLike) -> tuple[list, dict]:
    """Return the extension modules and the ``build_ext`` command class for ``setup()``.

    Args:
        root: the repository root (the folder of ``setup.py``); source paths are made relative to it.
    """
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    def rel(paths: list[str]) -> list[str]:
        return [os.path.relpath(HERE / p, root) for p in paths]

    include_dirs = [str(HERE)]
    ext_modules = [
        CppExtension(
            "bev_ddp._ops_cpu",
            sources=rel(CPU_SOURCES),
            include_dirs=include_dirs,
            define_macros=[("WITH_CPU_KERNELS", None)],
            extra_compile_args={"cxx": CXX_FLAGS},
            extra_link_args=["-fopenmp"],
        )
    ]
    if _want_cuda():
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
        ext_modules.append(
            CUDAExtension(
                "bev_ddp._ops_cuda",
                sources=rel(CUDA_SOURCES),
                include_dirs=include_dirs,
                define_macros=[("WITH_CUDA", None)],
                extra_compile_args={"cxx": ["-O3"], "nvcc": NVCC_FLAGS},
            )
        )
    return ext_modules, {"build_ext": BuildExtension}
