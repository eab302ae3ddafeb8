"""The local inference engine over llama.cpp's C API.

Nothing in here imports from the layers above it.
"""
