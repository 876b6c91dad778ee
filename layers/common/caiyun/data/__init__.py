"""The database: real MongoDB through pymongo, or the embedded engine with the same API."""
