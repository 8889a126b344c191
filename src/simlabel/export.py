"""Ship the classifier: one ONNX graph from an image tensor to class probabilities (``simlabel export``).

The graph is the model's image encoder as simlabel runs it (its ONNX export, fp32), then what simlabel does to
its output and the head: L2 normalisation, the head, the calibration (temperature or vector scaling) and the
softmax (a logistic head: the sigmoid, as two columns). It is built by exporting a small torch module of those
steps and joining it to the encoder's graph (``onnx.compose.merge_models``), so that any runtime that reads ONNX
runs the classifier without simlabel: ONNX Runtime, OpenVINO, TensorRT, a browser.

Input ``pixels``: ``(batch, 3, S, S)`` float32, RGB, the image resized and cropped as the metadata says, scaled
``(x / 255 - mean) / std``. Output ``probabilities``: ``(batch, C)``, columns in the order of the metadata's
``classes``. The metadata (``simlabel.*`` keys of the model's ``metadata_props``) holds the class names, the exact
pre-processing, the model's fingerprint, its calibration and the encoder's name and version; the README's
"Ship the classifier" section is a 20-line script that runs it with ``onnxruntime`` and Pillow alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simlabel.errors import InputError, ModelError
from simlabel.files import atomic_path
from simlabel.heads import EmbeddingClassifier, read_model_meta

__all__ = ["ExportedClassifier", "check_export", "export_classifier", "preprocess_for_export", "read_exported", "run_exported"]

OPSET = 17


@dataclass
class ExportedClassifier:
    """What :func:`export_classifier` wrote: the ONNX file and the metadata it carries (``classes``,
    ``preprocess``, ``fingerprint``, ``calibration``, ``encoder``)."""

    path: Path
    metadata: dict


def _encoder_for(meta: dict):
    """The image encoder the model's embeddings were made with, rebuilt on the CPU (and checked to be it)."""
    from simlabel.encoders import get_image_encoder

    spec = meta.get("embedding_model") or (meta.get("embedding_space") or "?").split("|")[0]
    version = meta.get("embedding_version") or ""
    options = {}
    if spec.startswith("efficientnet"):
        parts = version.split("/")
        if len(parts) >= 4:  # efficientnet-lite0/w<weights>/<normalization>/<resize>[/<engine precision>]
            options = {"normalization": parts[2], "resize": parts[3], "backend": "onnx"}
    encoder = get_image_encoder(spec, device="cpu", **options)
    if version and encoder.version != version:
        raise InputError(f"the model was trained on embeddings of {spec} version {version}; the encoder rebuilt here is "
                         f"{encoder.version} (another weights file or a reduced-precision engine): export would not "
                         "give the model's probabilities")
    return encoder


def preprocess_for_export(encoder) -> dict:
    """The encoder's pre-processing as the metadata states it (what a runtime must do before the graph)."""
    info = {"image_size": int(encoder.image_size), "layout": "NCHW", "channels": "RGB", "dtype": "float32",
            "scale": "x / 255", "mean": list(map(float, encoder.mean)), "std": list(map(float, encoder.std)),
            "resize": getattr(encoder, "resize", "center-crop"), "resample": "bilinear (Pillow, antialiased)"}
    if getattr(encoder, "name", "").startswith("skill"):
        info["before"] = "crop_to_product (simlabel.images): crop a studio photo to its product on white, padded square"
    return info


def _head_module(clf: EmbeddingClassifier):
    import torch

    module = clf.module_.eval()
    cal = clf.calibration_ or {}
    logistic = bool(clf.logistic_)

    class Head(torch.nn.Module):
        """features -> L2 normalised -> head -> calibration -> probabilities, as simlabel computes them."""

        def __init__(self) -> None:
            super().__init__()
            self.head = module
            method = cal.get("method", "none")
            self.register_buffer("scale", torch.tensor(
                [1.0 / float(cal["temperature"])] if method == "temperature" else cal.get("scale", [1.0]), dtype=torch.float32))
            self.register_buffer("bias", torch.tensor(cal.get("bias", [0.0]) if method == "vector" else [0.0],
                                                      dtype=torch.float32))

        def forward(self, features):
            f = features / torch.clamp(torch.linalg.vector_norm(features, dim=1, keepdim=True), min=1e-12)
            z = self.head(f) * self.scale + self.bias
            if logistic:
                p1 = torch.sigmoid(z[:, :1])
                return torch.cat([1 - p1, p1], dim=1)
            return torch.softmax(z, dim=1)

    return Head().eval()


def export_classifier(model: "str | os.PathLike", out: "str | os.PathLike") -> ExportedClassifier:
    """Write a model folder's classifier as one ONNX graph: image tensor in, class probabilities out.

    Parameters
    ----------
    model : str or os.PathLike
        A model folder written by ``simlabel train`` on image embeddings.
    out : str or os.PathLike
        The ``.onnx`` file (written atomically).

    Returns
    -------
    ExportedClassifier
        The file and its metadata.

    Raises
    ------
    InputError
        A model of titles (the text encoder has no ONNX export in simlabel: nothing is exported, and the message
        says so), an encoder without an ONNX export, or an encoder that is not the one the model's embeddings
        were made with.
    ModelError
        The joined graph fails ONNX's checker.
    FileNotFoundError
        ``model`` is not a model folder.

    Examples
    --------
    >>> from simlabel.export import export_classifier
    >>> made = export_classifier("model/", "classifier.onnx")  # doctest: +SKIP
    >>> made.metadata["classes"][:2]  # doctest: +SKIP
    ['dress', 'hat']
    """
    import onnx
    import torch

    from simlabel.heads import model_fingerprint

    clf = EmbeddingClassifier.load(model)
    meta = read_model_meta(model)
    inputs = meta.get("inputs") or "image"
    if inputs != "image" or len(clf.input_dims_) > 1:
        raise InputError(f"the model {model} takes {inputs} inputs: its text encoder has no ONNX export in simlabel, "
                         "so the classifier cannot be one graph; nothing was exported (predict runs it)")
    encoder = _encoder_for(meta)
    enc_path = encoder.onnx_model()
    if enc_path is None:
        raise InputError(f"the encoder {encoder.name} has no ONNX export on this machine: nothing was exported")
    enc = onnx.load(str(enc_path))
    enc_in, enc_out = enc.graph.input[0].name, enc.graph.output[0].name
    head = _head_module(clf)
    import io
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(head, (torch.zeros(1, clf.dim_),), buf, input_names=["features"], output_names=["probabilities"],
                          dynamic_axes={"features": {0: "batch"}, "probabilities": {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)
    head_model = onnx.load_from_string(buf.getvalue())
    head_model = onnx.compose.add_prefix(head_model, "head/", rename_inputs=True, rename_outputs=False)
    head_model.ir_version = enc.ir_version
    merged = onnx.compose.merge_models(enc, head_model, io_map=[(enc_out, "head/features")])
    if enc_in != "pixels":
        for node in merged.graph.node:
            node.input[:] = ["pixels" if i == enc_in else i for i in node.input]
        merged.graph.input[0].name = "pixels"
    info = {"classes": [str(c) for c in clf.classes_], "preprocess": preprocess_for_export(encoder),
            "fingerprint": model_fingerprint(clf), "calibration": clf.calibration_,
            "encoder": {"name": encoder.name, "version": encoder.version}, "inputs": "pixels", "outputs": "probabilities"}
    from simlabel import __version__

    del merged.metadata_props[:]
    for k, v in {**{f"simlabel.{k}": json.dumps(v) for k, v in info.items()}, "simlabel.version": __version__}.items():
        entry = merged.metadata_props.add()
        entry.key, entry.value = k, v
    merged.producer_name = "simlabel"
    try:
        onnx.checker.check_model(merged)
    except onnx.checker.ValidationError as e:
        raise ModelError(f"the joined classifier graph is not valid ONNX: {e}") from None
    with atomic_path(out) as tmp:
        onnx.save(merged, str(tmp))
    return ExportedClassifier(Path(out), info)


def read_exported(path: "str | os.PathLike") -> dict:
    """The ``simlabel.*`` metadata of an exported classifier, decoded."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    out = {}
    for p in m.metadata_props:
        if p.key.startswith("simlabel."):
            key = p.key[len("simlabel."):]
            out[key] = p.value if key == "version" else json.loads(p.value)
    if "classes" not in out:
        raise InputError(f"{path}: not a classifier exported by simlabel (no simlabel.classes metadata)")
    return out


def run_exported(path: "str | os.PathLike", pixels: np.ndarray, *, runtime: str = "onnxruntime") -> np.ndarray:
    """Run an exported classifier on ``(B, 3, S, S)`` pixels with ONNX Runtime or OpenVINO; ``(B, C)`` probabilities."""
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    if runtime == "onnxruntime":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run(["probabilities"], {"pixels": pixels})[0]
    if runtime == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return compiled(pixels)[compiled.output(0)]
    raise InputError(f"runtime must be onnxruntime or openvino; got {runtime!r}")


def check_export(path: "str | os.PathLike", model: "str | os.PathLike", catalog, *, n: int = 100) -> dict:
    """Run the exported classifier on the first ``n`` readable images of ``catalog`` with ONNX Runtime (and
    OpenVINO when it is installed), and compare with the model's own probabilities (the encoder as simlabel runs
    it, then the head): the largest absolute difference and the images/s of each runtime."""
    import time

    from simlabel.catalog import load_catalog
    from simlabel.images import ImageError, load_image

    cat = catalog if hasattr(catalog, "table") else load_catalog(catalog)
    meta = read_model_meta(model)
    clf = EmbeddingClassifier.load(model)
    encoder = _encoder_for(meta)
    pixels, paths = [], cat.image_paths()
    for p in paths:
        try:
            pixels.append(encoder.preprocess(load_image(p)))
        except (ImageError, OSError):
            continue
        if len(pixels) == n:
            break
    if not pixels:
        raise InputError(f"{cat.path}: no readable image to check the export on")
    px = np.stack(pixels)
    want = clf.predict_proba(encoder(px))
    runtimes = ["onnxruntime"]
    try:
        import openvino  # noqa: F401

        runtimes.append("openvino")
    except ImportError:
        pass
    diffs, speed = {}, {}
    for rt in runtimes:
        run_exported(path, px[:2], runtime=rt)  # warm-up: load and compile
        t0 = time.perf_counter()
        got = run_exported(path, px, runtime=rt)
        speed[rt] = len(px) / (time.perf_counter() - t0)
        diffs[rt] = float(np.abs(got - want).max())
    return {"images": int(len(px)), "max_abs_diff": diffs, "images_per_s": speed}
