"""Tables: the sources, fast.ai's preprocessing steps, the TableBunch."""
