"""CardTwin's Streamlit dashboard: run, explore, compare and present scenarios (app.py)."""
