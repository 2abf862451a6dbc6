"""A thief's prediction API as LitServe serves it: an uploaded image in, the top-5 class probabilities out.

    python litserve_topk.py MODEL.safetensors PORT [COUNT_FILE]

The handler is what a hand-written LitServe app looks like: it decodes the uploaded PNG or JPEG (a multipart
``file``, or base64 in a JSON ``image`` field; or takes float ``pixels``) with Pillow, runs
the model (a modelprint model file, loaded with modelprint.models.load_model) and answers
``{"predictions": [{"label": NAME, "score": P}, ...]}`` for the five most probable classes. Every image it answers
is counted, one line per image in COUNT_FILE, so that a test can compare the server's count with the client's.
"""

from __future__ import annotations

import base64
import io
import sys

import litserve as ls
import numpy as np
import torch
from PIL import Image

from modelprint.models import load_model


class TopFive(ls.LitAPI):
    def setup(self, device):
        torch.set_num_threads(1)
        self.model = load_model(sys.argv[1])
        self.names = self.model.spec.info.get("class_names") or [str(i) for i in range(self.model.spec.num_outputs)]
        self.count_file = sys.argv[3] if len(sys.argv) > 3 else None

    def decode_request(self, request):
        if "pixels" in request:  # a JSON body: the image as nested lists C x H x W of floats in [0, 1]
            return torch.tensor(request["pixels"], dtype=torch.float32)
        if "image" in request:  # a JSON body: a base64-encoded PNG or JPEG
            data = base64.b64decode(request["image"])
        else:  # a multipart upload
            upload = request["file"]
            data = upload.file.read() if hasattr(upload, "file") else upload
        image = Image.open(io.BytesIO(data)).convert("RGB" if self.model.spec.channels == 3 else "L")
        pixels = np.asarray(image, dtype=np.float32) / 255.0
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        return torch.from_numpy(pixels).permute(2, 0, 1)

    def predict(self, x):
        with torch.no_grad():
            probabilities = torch.softmax(self.model(x[None]), dim=1)[0]
        if self.count_file:
            with open(self.count_file, "a") as handle:
                handle.write("1\n")
        return probabilities

    def encode_response(self, probabilities):
        top = torch.topk(probabilities, k=min(5, len(probabilities)))
        return {"predictions": [{"label": self.names[int(i)], "score": float(p)} for p, i in zip(top.values, top.indices)]}


if __name__ == "__main__":
    server = ls.LitServer(TopFive(api_path="/predict"), accelerator="cpu", devices=1, timeout=60)
    server.run(host="127.0.0.1", port=int(sys.argv[2]), generate_client_file=False, num_api_servers=1)
