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

__all__ = ["ExportedClassifier", "check_export", "export_classifier", "preprocess_for_export", "read_exported", "run_exported",
           "tokenize_titles"]

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
    """The encoder's pre-processing as the metadata states it (what a runtime must do before the graph). A Hugging
    Face tower (CLIP, DINO) runs its image processor: its settings go in whole (``processor``), so that
    ``transformers``' processor of that class rebuilt from them gives the same pixels."""
    processor = getattr(encoder, "processor", None)
    if processor is not None:
        cfg = processor.to_dict()
        return {"image_size": int(encoder.image_size), "layout": "NCHW", "channels": "RGB", "dtype": "float32",
                "scale": f"x * {cfg.get('rescale_factor', 1 / 255)}", "mean": list(map(float, cfg.get("image_mean") or (0, 0, 0))),
                "std": list(map(float, cfg.get("image_std") or (1, 1, 1))), "resize": {"size": cfg.get("size"),
                "crop_size": cfg.get("crop_size"), "do_center_crop": cfg.get("do_center_crop"),
                **getattr(encoder, "_proc_kwargs", {})}, "resample": f"PIL resample {cfg.get('resample')}",
                "processor": {"class": type(processor).__name__,
                              **{k: v for k, v in cfg.items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))}}}
    info = {"image_size": int(encoder.image_size), "layout": "NCHW", "channels": "RGB", "dtype": "float32",
            "scale": "x / 255", "mean": list(map(float, encoder.mean)), "std": list(map(float, encoder.std)),
            "resize": getattr(encoder, "resize", "center-crop"), "resample": "bilinear (Pillow, antialiased)"}
    if getattr(encoder, "name", "").startswith("skill"):
        info["before"] = "crop_to_product (simlabel.images): crop a studio photo to its product on white, padded square"
    return info


def _head_module(clf: EmbeddingClassifier, towers: int = 1):
    """features (one tensor per input: the image's, and the title's for a two-input model) -> each L2
    normalised -> side by side -> head -> calibration -> probabilities, as simlabel computes them."""
    import torch

    module = clf.module_.eval()
    cal = clf.calibration_ or {}
    logistic = bool(clf.logistic_)

    def unit(x):
        return x / torch.clamp(torch.linalg.vector_norm(x, dim=1, keepdim=True), min=1e-12)

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = module
            method = cal.get("method", "none")
            self.register_buffer("scale", torch.tensor(
                [1.0 / float(cal["temperature"])] if method == "temperature" else cal.get("scale", [1.0]), dtype=torch.float32))
            self.register_buffer("bias", torch.tensor(cal.get("bias", [0.0]) if method == "vector" else [0.0],
                                                      dtype=torch.float32))

        def forward(self, *features):
            f = torch.cat([unit(x) for x in features], dim=1) if len(features) > 1 else unit(features[0])
            z = self.head(f) * self.scale + self.bias
            if logistic:
                p1 = torch.sigmoid(z[:, :1])
                return torch.cat([1 - p1, p1], dim=1)
            return torch.softmax(z, dim=1)

    return Head().eval()


def _to_onnx(module, args: tuple, input_names: list[str], output: str, dynamic: dict):
    """``torch.onnx.export`` (TorchScript exporter, :data:`OPSET`) into memory, loaded as an ONNX model."""
    import io
    import warnings

    import onnx
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, input_names=input_names, output_names=[output], dynamic_axes=dynamic,
                          opset_version=OPSET, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def _text_tower(meta: dict, model: "str | os.PathLike"):
    """The title encoder the model's text embeddings were made with, as an ONNX graph ``(input_ids,
    attention_mask) -> unit-length embedding``, with its tokenizer (``tokenizers`` JSON) and settings; an
    :class:`InputError` saying why where it cannot be one."""
    import torch

    from simlabel.encoders import get_text_encoder
    from simlabel.encoders.text import SentenceTransformerTextEncoder

    space = meta.get("text_embedding_space") or ""
    spec, version = (space.split("|") + ["", ""])[:2]
    if not spec:
        raise InputError(f"the model {model} records no text embedding space: its title encoder is unknown, so "
                         "nothing was exported")
    encoder = get_text_encoder(spec, "cpu")
    if not isinstance(encoder, SentenceTransformerTextEncoder):
        raise InputError(f"the model {model} reads titles embedded by {spec}, which simlabel cannot export to ONNX "
                         "(sentence-transformers models such as minilm can): nothing was exported; predict runs it")
    if version and encoder.version != version:
        raise InputError(f"the model was trained on titles embedded by {spec} version {version}; the encoder here is "
                         f"{encoder.version}: export would not give the model's probabilities")
    st = encoder.model.to("cpu").eval()

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.st = st

        def forward(self, input_ids, attention_mask):
            out = self.st({"input_ids": input_ids, "attention_mask": attention_mask})["sentence_embedding"]
            return out / torch.clamp(torch.linalg.vector_norm(out, dim=1, keepdim=True), min=1e-12)

    example = st.tokenize(["a product title"])
    graph = _to_onnx(Tower().eval(), (example["input_ids"], example["attention_mask"]), ["input_ids", "attention_mask"],
                     "title_features", {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                                        "title_features": {0: "batch"}})
    info = {"name": encoder.name, "version": encoder.version, "max_tokens": int(st.max_seq_length),
            "inputs": ["input_ids", "attention_mask"], "dtype": "int64",
            "how": "tokenizers.Tokenizer.from_str(metadata['simlabel.tokenizer']), truncated to max_tokens, padded "
                   "with attention_mask 0"}
    return graph, info, st.tokenizer.backend_tokenizer.to_str()


def export_classifier(model: "str | os.PathLike", out: "str | os.PathLike") -> ExportedClassifier:
    """Write a model folder's classifier as one ONNX graph: image tensor in, class probabilities out.

    A model of images and titles (``train --inputs image+text``, ``--fusion attention``) is one graph with three
    inputs: ``pixels``, and the title tokenised as ``input_ids`` and ``attention_mask`` (``int64``, ``(batch,
    tokens)``): the title encoder (a sentence-transformers model such as ``minilm``, exported with its pooling
    and L2 normalisation) beside the image encoder, both into the head. Its tokenizer travels in the metadata
    (``simlabel.tokenizer``, the ``tokenizers`` JSON) with ``title_encoder`` (``max_tokens``).

    Parameters
    ----------
    model : str or os.PathLike
        A model folder written by ``simlabel train`` on image embeddings (and titles).
    out : str or os.PathLike
        The ``.onnx`` file (written atomically).

    Returns
    -------
    ExportedClassifier
        The file and its metadata.

    Raises
    ------
    InputError
        A model of titles alone; a model whose title encoder simlabel cannot export (CLIP's text tower: nothing
        is exported, and the message says why); an encoder without an ONNX export, or an encoder that is not
        the one the model's embeddings were made with.
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
    inputs = meta.get("inputs") or ("image+text" if len(clf.input_dims_) > 1 else "image")
    if inputs not in ("image", "image+text"):
        raise InputError(f"the model {model} takes {inputs} inputs: export ships image classifiers (one image input, "
                         "or an image and its title); nothing was exported (predict runs it)")
    encoder = _encoder_for(meta)
    text_graph = text_info = tokenizer = None
    if inputs == "image+text":  # the title tower first: a model it cannot export writes nothing
        text_graph, text_info, tokenizer = _text_tower(meta, model)
    enc_path = encoder.onnx_model()
    if enc_path is None:
        raise InputError(f"the encoder {encoder.name} has no ONNX export on this machine: nothing was exported")
    enc = onnx.load(str(enc_path))
    enc_in, enc_out = enc.graph.input[0].name, enc.graph.output[0].name
    towers = 1 if text_graph is None else 2
    head_inputs = ["features"] if towers == 1 else ["image_features", "title_features"]
    example = (torch.zeros(1, clf.input_dims_[0]),) + ((torch.zeros(1, clf.input_dims_[1]),) if towers == 2 else ())
    head_model = _to_onnx(_head_module(clf, towers), example, head_inputs, "probabilities",
                          {**{n: {0: "batch"} for n in head_inputs}, "probabilities": {0: "batch"}})
    head_model = onnx.compose.add_prefix(head_model, "head/", rename_inputs=True, rename_outputs=False)
    head_model.ir_version = enc.ir_version
    io_map = [(enc_out, f"head/{head_inputs[0]}")]
    if text_graph is not None:
        # both towers side by side (no edge between them), each keeping its own input names
        text_graph = onnx.compose.add_prefix(text_graph, "title/", rename_inputs=False, rename_outputs=True)
        text_graph.ir_version = enc.ir_version
        enc = onnx.compose.merge_models(_with_opset(enc, text_graph), text_graph, io_map=[])
        io_map.append(("title/title_features", "head/title_features"))
    merged = onnx.compose.merge_models(_with_opset(enc, head_model), head_model, io_map=io_map)
    if enc_in != "pixels":
        for node in merged.graph.node:
            node.input[:] = ["pixels" if i == enc_in else i for i in node.input]
        for inp in merged.graph.input:
            if inp.name == enc_in:
                inp.name = "pixels"
    info = {"classes": [str(c) for c in clf.classes_], "preprocess": preprocess_for_export(encoder),
            "fingerprint": model_fingerprint(clf), "calibration": clf.calibration_,
            "encoder": {"name": encoder.name, "version": encoder.version},
            "inputs": "pixels" if towers == 1 else ["pixels", "input_ids", "attention_mask"], "outputs": "probabilities"}
    if text_info is not None:
        info["title_encoder"] = text_info
    from simlabel import __version__

    del merged.metadata_props[:]
    props = {**{f"simlabel.{k}": json.dumps(v) for k, v in info.items()}, "simlabel.version": __version__}
    if tokenizer is not None:
        props["simlabel.tokenizer"] = tokenizer
    for k, v in props.items():
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


def _with_opset(a, b):
    """``a`` with the default-domain opset raised to ``b``'s where lower: ``merge_models`` wants them equal."""
    import onnx

    want = max(o.version for o in b.opset_import if o.domain in ("", "ai.onnx"))
    have = max(o.version for o in a.opset_import if o.domain in ("", "ai.onnx"))
    if have < want:
        a = onnx.version_converter.convert_version(a, want)
    return a


def read_exported(path: "str | os.PathLike") -> dict:
    """The ``simlabel.*`` metadata of an exported classifier, decoded."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    out = {}
    for p in m.metadata_props:
        if p.key.startswith("simlabel."):
            key = p.key[len("simlabel."):]
            out[key] = p.value if key in ("version", "tokenizer") else json.loads(p.value)
    if "classes" not in out:
        raise InputError(f"{path}: not a classifier exported by simlabel (no simlabel.classes metadata)")
    return out


def tokenize_titles(path_or_meta: "str | os.PathLike | dict", titles: "list[str]") -> dict[str, np.ndarray]:
    """Titles as an exported two-input classifier takes them: ``input_ids`` and ``attention_mask``
    (``int64``, padded to the longest, truncated to ``max_tokens``), by the tokenizer in its metadata."""
    from tokenizers import Tokenizer

    meta = path_or_meta if isinstance(path_or_meta, dict) else read_exported(path_or_meta)
    if "tokenizer" not in meta:
        raise InputError("this classifier takes no titles (no simlabel.tokenizer in its metadata)")
    tok = Tokenizer.from_str(meta["tokenizer"])
    tok.enable_truncation(int(meta["title_encoder"]["max_tokens"]))
    tok.enable_padding()
    enc = tok.encode_batch([str(t) for t in titles])
    return {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}


def run_exported(path: "str | os.PathLike", pixels: np.ndarray, *, runtime: str = "onnxruntime",
                 titles: "list[str] | None" = None) -> np.ndarray:
    """Run an exported classifier on ``(B, 3, S, S)`` pixels (and, for a two-input one, the ``B`` titles) with ONNX
    Runtime or OpenVINO; ``(B, C)`` probabilities."""
    feed = {"pixels": np.ascontiguousarray(pixels, dtype=np.float32)}
    if titles is not None:
        feed.update(tokenize_titles(path, titles))
    if runtime == "onnxruntime":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        wanted = {i.name for i in sess.get_inputs()}
        if wanted - set(feed):
            raise InputError(f"{path} takes {sorted(wanted)}: give the titles too" if titles is None else
                             f"{path} takes {sorted(wanted)}")
        return sess.run(["probabilities"], {k: v for k, v in feed.items() if k in wanted})[0]
    if runtime == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        # an input port may carry several tensor names (OpenVINO merges an input with a no-op Cast after it)
        names = set().union(*(p.get_names() for p in compiled.inputs))
        missing = [p.get_any_name() for p in compiled.inputs if not p.get_names() & set(feed)]
        if missing:
            raise InputError(f"{path} takes inputs {missing} that were not given")
        return np.array(compiled({k: v for k, v in feed.items() if k in names})[compiled.output(0)], copy=True)
    raise InputError(f"runtime must be onnxruntime or openvino; got {runtime!r}")


def check_export(path: "str | os.PathLike", model: "str | os.PathLike", catalog, *, n: int = 100,
                 text_col: str = "title") -> dict:
    """Run the exported classifier on the first ``n`` readable images of ``catalog`` (with their ``text_col``
    titles, for a two-input classifier) with ONNX Runtime (and OpenVINO when it is installed), and compare with the
    model's own probabilities (the encoders as simlabel runs them, then the head): the largest absolute difference
    and the images/s of each runtime."""
    import time

    from simlabel.catalog import load_catalog
    from simlabel.images import ImageError, load_image

    cat = catalog if hasattr(catalog, "table") else load_catalog(catalog)
    meta = read_model_meta(model)
    clf = EmbeddingClassifier.load(model)
    encoder = _encoder_for(meta)
    shipped = read_exported(path)
    title_col = text_col if "tokenizer" in shipped else None
    if title_col is not None and title_col not in cat.table.columns:
        raise InputError(f"{cat.path}: the classifier takes titles; no `{title_col}` column to check it with")
    pixels, titles, paths = [], [], cat.image_paths()
    for r, p in enumerate(paths):
        try:
            pixels.append(encoder.preprocess(load_image(p)))
        except (ImageError, OSError):
            continue
        if title_col is not None:
            titles.append(str(cat.table[title_col].iloc[r]))
        if len(pixels) == n:
            break
    if not pixels:
        raise InputError(f"{cat.path}: no readable image to check the export on")
    px = np.stack(pixels)
    features = encoder(px)
    if title_col is not None:  # the model's own title encoder, as embed runs it
        from simlabel.encoders import get_text_encoder

        features = np.concatenate([features, get_text_encoder(shipped["title_encoder"]["name"], "cpu")(titles)], axis=1)
    want = clf.predict_proba(features)
    runtimes = ["onnxruntime"]
    try:
        import openvino  # noqa: F401

        runtimes.append("openvino")
    except ImportError:
        pass
    diffs, speed = {}, {}
    for rt in runtimes:
        run_exported(path, px[:2], runtime=rt, titles=titles[:2] if title_col else None)  # warm-up: load and compile
        t0 = time.perf_counter()
        got = run_exported(path, px, runtime=rt, titles=titles if title_col else None)
        speed[rt] = len(px) / (time.perf_counter() - t0)
        diffs[rt] = float(np.abs(got - want).max())
    return {"images": int(len(px)), "max_abs_diff": diffs, "images_per_s": speed}
