"""The paper's own files: its pickled `dataset.pt` and `zoo_testsplit.pt` read into plain data, and a
paper folder's zoo, B_T and sampled populations. May import: io, runtime, images, nets, zoo."""
