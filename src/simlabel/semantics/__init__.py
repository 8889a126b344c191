"""What papers 002 and 003 both stand on: class names as text, WordNet, taxonomies, category semantics."""
