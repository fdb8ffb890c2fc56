"""The controller widget (ipywidgets) and its DAG canvas (anywidget); optional extra."""
