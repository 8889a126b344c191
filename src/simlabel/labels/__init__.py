"""Label methods: pure numerical cores (numpy/scipy/torch in, arrays out) and their label files."""

from simlabel.labels.io import LabelFileError, read_labels, write_labels

__all__ = ["LabelFileError", "read_labels", "write_labels"]
