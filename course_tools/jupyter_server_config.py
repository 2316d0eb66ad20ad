# The Jupyter server's settings for `make lab` and `make learn` (passed with --config): a notebook saved into
# notebooks/, the tracked instructor's copy, is saved without outputs (course_tools/workspace.py, strip_on_save).
from course_tools.workspace import strip_on_save

c = get_config()  # noqa: F821 -- defined by Jupyter when it loads this file
c.FileContentsManager.pre_save_hook = strip_on_save
