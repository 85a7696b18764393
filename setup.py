"""Package discovery for the three import packages of this repository.

setup.cfg holds the metadata; only the folder mapping lives here, because setuptools' ``find:``
in setup.cfg discovers packages under one root and cannot rename folders (export/ is installed
as ``aslfeat_export``, training/ as ``aslfeat_training``, weights/ as ``aslfeat_cli.weights``,
a data-only folder holding the shipped ONNX model and its model card).
"""

from setuptools import find_packages, setup

# import package -> folder in this repository
PACKAGE_DIR = {
    "aslfeat_export": "export",
    "aslfeat_training": "training",
    "aslfeat_cli.weights": "weights",
}


def discover() -> list[str]:
    """aslfeat_cli and its subpackages, plus every mapped folder and its subpackages."""
    packages = find_packages(include=["aslfeat_cli", "aslfeat_cli.*"])
    for name, folder in PACKAGE_DIR.items():
        packages.append(name)
        packages.extend(f"{name}.{sub}" for sub in find_packages(folder))
    return sorted(set(packages))


setup(packages=discover(), package_dir=PACKAGE_DIR)
