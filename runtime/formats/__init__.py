"""Readers and writers of the toolkit's file formats: event JSON, frames CSV, label CSVs, frame
folders, JSON files, image headers, provenance sidecars and the timeline plot."""
