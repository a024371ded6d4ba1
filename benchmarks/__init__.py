"""`charzoo bench`: charzoo against its peers (Keras, TF1-style graphs, PyTorch), on this machine."""
