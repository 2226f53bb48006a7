// Python bindings of the compiled ops.  Built twice by ops/build.py: into bev_ddp._ops_cpu with
// WITH_CPU_KERNELS and into bev_ddp._ops_cuda with WITH_CUDA; the headers dispatch by device.
#include <torch/extension.h>

#include "bev_pool/bev_pool.h"
#include "ms_deform_attn/ms_deform_attn.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "bev_ddp compiled ops: bev_pool and multi-scale deformable attention";
  m.def("bev_pool_forward", &bev_ddp::bev_pool_forward,
        "bev_pool forward: (feats [N,C], coords [N,4], B, Z, X, Y) -> out [B,C,Z,X,Y]",
        py::arg("feats"), py::arg("coords"), py::arg("batch_size"), py::arg("nz"), py::arg("nx"), py::arg("ny"));
  m.def("bev_pool_backward", &bev_ddp::bev_pool_backward,
        "bev_pool backward: (grad_out [B,C,Z,X,Y], coords [N,4]) -> grad_feats [N,C]", py::arg("grad_out"),
        py::arg("coords"));
  m.def("ms_deform_attn_forward", &bev_ddp::ms_deform_attn_forward,
        "ms_deform_attn forward -> out [B,Q,H*D] (spatial_shapes and level_start_index on the CPU)", py::arg("value"), py::arg("spatial_shapes"),
        py::arg("level_start_index"), py::arg("sampling_locations"), py::arg("attn_weights"));
  m.def("ms_deform_attn_backward", &bev_ddp::ms_deform_attn_backward,
        "ms_deform_attn backward -> (grad_value or None when need_grad_value is false, grad_sampling_locations, "
        "grad_attn_weights)",
        py::arg("value"), py::arg("spatial_shapes"), py::arg("level_start_index"), py::arg("sampling_locations"),
        py::arg("attn_weights"), py::arg("grad_out"), py::arg("need_grad_value") = true);
#ifdef WITH_CUDA
  m.attr("device") = "cuda";
#else
  m.attr("device") = "cpu";
#endif
}
