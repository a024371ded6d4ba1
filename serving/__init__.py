"""How a saved model is used; depends on TensorFlow and the SavedModel only."""
