"""Models of elements_app (the elements issue defines Element)."""
