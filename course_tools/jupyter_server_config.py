# The Jupyter server's settings for `make lab` and `make learn` (passed with --config): a notebook saved into
# notebooks/, the tracked instructor's copy, is saved without outputs (course_tools/workspace.py, strip_on_save).
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

from course_tools.workspace import strip_on_save


class CourseContentsManager(AsyncLargeFileManager):
    """JupyterLab's own contents manager, with the course's pre-save hook registered once."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.register_pre_save_hook(strip_on_save)


c = get_config()  # noqa: F821 -- defined by Jupyter when it loads this file
c.ServerApp.contents_manager_class = CourseContentsManager
