from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("avazu_rowcodec", ["avazu_rowcodec.c"], extra_compile_args=["-O2", "-Wall", "-Wextra"]),
    ],
)
