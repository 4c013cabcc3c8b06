"""rasd (رصد): extraction of military bases, forces, operations, locations and
withdrawal/handover relations from Arabic news. Torch-free: onnxruntime,
tokenizers, numpy and huggingface_hub only.
"""
from .scheme import Scheme, load_scheme  # noqa: F401
from .schema import Document, Entity, Relation  # noqa: F401

__version__ = "0.2.0"


def __getattr__(name):
    # Extractor pulls in onnxruntime; import it only when asked for, so the
    # schema tools (validate, stats) start fast.
    if name == "Extractor":
        from .extractor import Extractor
        return Extractor
    raise AttributeError(name)
