"""The faces of a run that people look at: the web page, the HTML report, plots, spoken summaries, thumbnails."""
