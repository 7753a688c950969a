"""The networks and their training: the VAE family (``models``), its layers and losses, the
training options (``options``) and loop (``training``), sampling, and the conversion of the
scoring graph to LiteRT (``lite_graph``). Importing this package imports nothing heavy; its
modules that use Keras import TensorFlow."""
