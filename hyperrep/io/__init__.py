"""Reading and writing files safely: atomic writes, JSON and safetensors, the image formats of the
public zoos, and the allow-listed unpickling of the paper's `.pt` files. Imports nothing of
hyperrep."""
