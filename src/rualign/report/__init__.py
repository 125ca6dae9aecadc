"""Tables, plots and the HTML answer browser."""
