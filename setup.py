"""What pyproject.toml cannot say: the tools/ folder shipped as the package `detres_tools`, so `detres <verb>`
finds the tools after a wheel install (pyproject's packages.find cannot be combined with a package-dir entry for a
folder outside the found packages). Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["detres", "detres.*"]), "detres_tools"], package_dir={"detres_tools": "tools"})
