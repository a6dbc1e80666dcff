"""The model that both the worker and the trainer need: its definition and item rows, its
artifacts and their store, item projection, the serving scorers and the watcher that swaps them."""
