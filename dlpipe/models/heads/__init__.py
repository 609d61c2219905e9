"""Task heads: ``base`` the interface, ``registry`` the heads by the name model.json records, one module per task."""
