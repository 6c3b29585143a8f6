"""nnU-Net's three folders, through nnunetv2's own path handling (nnunetv2.paths).

nnunetv2 reads the environment variables at call time, as nnQC needs (tests and the demo point them elsewhere);
nnQC adds that an empty value counts as unset and a message that names all three folders.
"""
from nnunetv2 import paths as nnunet_paths

_FOLDERS = {"nnUNet_raw": nnunet_paths.nnUNet_raw, "nnUNet_preprocessed": nnunet_paths.nnUNet_preprocessed,
            "nnUNet_results": nnunet_paths.nnUNet_results}


def _folder(name: str) -> str | None:
    value = _FOLDERS[name].get()
    return value if value else None


def nnUNet_raw() -> str | None:
    return _folder("nnUNet_raw")


def nnUNet_preprocessed() -> str | None:
    return _folder("nnUNet_preprocessed")


def nnUNet_results() -> str | None:
    return _folder("nnUNet_results")


def require(name: str) -> str:
    """The folder named by environment variable `name`, or a clear error telling the user to set it."""
    value = _folder(name)
    if value is None:
        raise RuntimeError(f"The environment variable {name} is not set. nnQC uses nnU-Net's folders: "
                           f"export nnUNet_raw, nnUNet_preprocessed and nnUNet_results as for nnU-Net.")
    return value
