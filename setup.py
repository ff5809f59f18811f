"""Map the root folders onto one import namespace: ``train/`` -> ``vce.train`` and so on.

Everything else lives in pyproject.toml; this file only computes the package list so that a new
sub-package is picked up without editing configuration. ``vce`` itself is a namespace package.
"""

from setuptools import find_namespace_packages, setup

LAYERS = ("runtime", "calibration", "train", "export")

packages: list[str] = []
for layer in LAYERS:
    packages.append(f"vce.{layer}")
    packages += [f"vce.{layer}.{sub}" for sub in find_namespace_packages(layer, exclude=["*__pycache__*"])]

setup(packages=packages, package_dir={f"vce.{layer}": layer for layer in LAYERS})
