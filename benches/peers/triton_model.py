# Triton Python-backend model for benches/peers.sh: runs the ONNX file next
# to this model.py with onnxruntime, one intra-op and one inter-op thread
# (the servers share one core). prepare.py writes it into the Triton model
# repository with a first line that puts the peers venv on sys.path: the
# backend's stub process embeds its own interpreter and ignores PYTHONPATH.
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        # With dynamic batching Triton hands over every queued request at
        # once: one ORT run for all of them, then split the rows back.
        arrays = [{n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs} for r in requests]
        if len(arrays) == 1:
            feeds = arrays[0]
        else:
            feeds = {n: np.concatenate([a[n] for a in arrays]) for n in self.inputs}
        results = self.session.run(self.outputs, feeds)
        bounds = np.cumsum([a[self.inputs[0]].shape[0] for a in arrays])[:-1]
        parts = [np.split(y, bounds) for y in results]
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(n, p[k]) for n, p in zip(self.outputs, parts)])
            for k in range(len(requests))
        ]
