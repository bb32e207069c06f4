"""Evaluation analysis: PR curves, error breakdowns, confusion matrix, worst images and the HTML report."""
