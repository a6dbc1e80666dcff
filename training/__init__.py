"""Training of the transfer model (see the training issue); empty until then."""
