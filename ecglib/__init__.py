"""ecglib: data, models, training and diagnostics for the deep-RNN-versus-deep-CNN ECG book."""
__version__ = "0.1.0"
