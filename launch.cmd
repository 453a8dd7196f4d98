@echo off
rem Double-click this file on Windows: it runs launch.ps1 (venv, PyTorch, models, app) without changing the
rem PowerShell execution policy of the machine. Arguments are passed on (e.g. -Test, -SelfTest).
powershell -NoProfile -ExecutionPolicy Bypass -File "%~dp0launch.ps1" %*
if errorlevel 1 pause
