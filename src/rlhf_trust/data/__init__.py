"""Raw data: sources (mirror / hub), parsing into records, prepare, and the GX validation gate."""
