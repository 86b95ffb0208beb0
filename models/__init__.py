"""Classifier backends behind one interface, training, evaluation and the versioned model store."""
