"""The one thing pyproject.toml cannot say: install the repository's top-level ``cuda_templates/`` inside the package.

The design keeps the CUDA templates beside ``kernla/`` in the repository; the wheel carries them as
``kernla/cuda_templates/*.cu`` (found with ``importlib.resources``, see ``kernla.engines.cuda.source``),
not as a stray top-level ``cuda_templates`` package in site-packages. Everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["kernla", "kernla.*"]), "kernla.cuda_templates"],
    package_dir={"kernla.cuda_templates": "cuda_templates"},
)
