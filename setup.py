"""The optional compiled core of the header scanner (everything else is in pyproject.toml).

``optional=True``: where the C compiler or the Python headers are missing, the build goes on
without it and dicomflow uses its pure-Python scanner, which gives the same results.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "dicomflow.dicom._cheader",
            sources=["dicomflow/dicom/_cheader.c"],
            optional=True,
        )
    ]
)
