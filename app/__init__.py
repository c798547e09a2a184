"""The Streamlit operator console: reads through core.queries, writes only through core.control."""
