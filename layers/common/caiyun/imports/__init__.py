"""Reading the property company's import files (spreadsheets and CSV) row by row."""
