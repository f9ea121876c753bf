"""The book's profiles and chapters' inputs, the cached runs, the published numbers, the
recorded results, and the pipeline that rebuilds the book."""
