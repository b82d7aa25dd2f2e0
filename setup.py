"""Builds the Cython extensions in icws_fast/_ext; everything else is in pyproject.toml."""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

# _hashtree hashes with OpenSSL's libcrypto (headers: Debian's libssl-dev).
LIBRARIES = {"_hashtree": ["crypto"]}

extensions = [
    Extension(
        f"icws_fast._ext.{path.stem}",
        [str(path)],
        extra_compile_args=["-O3"],
        libraries=LIBRARIES.get(path.stem, []),
    )
    for path in sorted(Path("icws_fast/_ext").glob("*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
