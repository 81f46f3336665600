"""The web interface (`unclip serve`): gradio, an optional extra (`pip install unclip[web]`)."""
