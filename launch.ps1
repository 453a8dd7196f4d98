<#
.SYNOPSIS
  One-click launcher for Windows: Python check, a venv beside the app, the right PyTorch build, the
  project, the models, then the app. Re-running skips everything that is already done.

.DESCRIPTION
  Right-click -> "Run with PowerShell", or from a console:
    powershell -NoProfile -ExecutionPolicy Bypass -File launch.ps1            install what is missing, start the app
    powershell -NoProfile -ExecutionPolicy Bypass -File launch.ps1 -Test      install with test extras, run the tests
    powershell -NoProfile -ExecutionPolicy Bypass -File launch.ps1 -SelfTest  install, then run the health check
  Extra arguments are passed on (to pytest with -Test, to main.py otherwise).

  Environment (same as launch.sh):
    INDEXTTS_PYTHON       the Python to use (e.g. C:\Python311\python.exe)
    INDEXTTS_TORCH_SPEC   what to install for PyTorch (default "torch", e.g. "torch==2.13.0")
    INDEXTTS_TORCH_INDEX  pip index for PyTorch (unset: chosen from nvidia-smi; empty: PyPI)
    INDEXTTS_ASSUME_YES   1 = answer yes to "install Python with winget?" (unattended installs)
    INDEXTTS_NO_PAUSE     1 = do not wait for Enter after an error (CI)
#>
[CmdletBinding()]
param(
    [switch]$Test,
    [switch]$SelfTest,
    [Parameter(ValueFromRemainingArguments = $true)]
    [string[]]$Rest = @()
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'

$here = $PSScriptRoot
Set-Location -LiteralPath $here
$venv = Join-Path $here '.venv'
$mode = 'app'
if ($Test) { $mode = 'test' }
if ($SelfTest) { $mode = 'selftest' }
$steps = 6
if ($mode -ne 'app') { $steps = 5 }
$script:step = 0

# Python must not pick up the user's packages or paths; text is UTF-8 everywhere.
$env:PYTHONUTF8 = '1'
$env:PYTHONIOENCODING = 'utf-8'
$env:PYTHONNOUSERSITE = '1'
$env:PIP_DISABLE_PIP_VERSION_CHECK = '1'
Remove-Item Env:PYTHONPATH -ErrorAction SilentlyContinue
Remove-Item Env:PYTHONHOME -ErrorAction SilentlyContinue
try { [Console]::OutputEncoding = [System.Text.Encoding]::UTF8 } catch { }

function Say([string]$message) {
    Write-Host "[launch] $message"
}

function Step([string]$message) {
    $script:step += 1
    Write-Host ("[{0}/{1}] {2}" -f $script:step, $steps, $message) -ForegroundColor Cyan
}

function Fail([string]$message, [string]$next) {
    Write-Host "[launch] ERROR: $message" -ForegroundColor Red
    if ($next) { Write-Host "[launch] Next step: $next" -ForegroundColor Yellow }
    if (-not $env:INDEXTTS_NO_PAUSE -and -not $env:CI) { [void](Read-Host 'Press Enter to close') }
    exit 1
}

# Runs a program, hides its output, returns its exit code (never throws on stderr output).
function Test-Command([string]$exe, [string[]]$arguments) {
    $ErrorActionPreference = 'Continue'
    try {
        & $exe @arguments *> $null
        return $LASTEXITCODE
    } catch {
        return 127
    }
}

# Runs a program, returns its stdout lines (empty when it cannot run).
function Read-Command([string]$exe, [string[]]$arguments) {
    $ErrorActionPreference = 'Continue'
    try {
        $lines = & $exe @arguments 2> $null
        if ($LASTEXITCODE -ne 0) { return @() }
        return @($lines)
    } catch {
        return @()
    }
}

# The full path of a usable interpreter (3.10+, 64-bit) for a candidate command, or $null.
function Find-Interpreter([string]$exe, [string[]]$prefix) {
    $probe = 'import struct, sys; print(sys.executable); sys.exit(0 if sys.version_info >= (3, 10) and struct.calcsize("P") == 8 else 3)'
    $out = @(Read-Command $exe ($prefix + @('-c', $probe)))
    if ($out.Count -gt 0 -and (Test-Path -LiteralPath $out[-1])) { return $out[-1] }
    return $null
}

function Find-Python {
    if ($env:INDEXTTS_PYTHON) {
        $found = Find-Interpreter $env:INDEXTTS_PYTHON @()
        if (-not $found) { Fail "INDEXTTS_PYTHON=$env:INDEXTTS_PYTHON is not a 64-bit Python 3.10 or newer." 'Point INDEXTTS_PYTHON at a 64-bit Python 3.10+ (or unset it) and run again.' }
        return $found
    }
    foreach ($version in @('3.12', '3.11', '3.10', '3.13')) {
        if (Get-Command py -ErrorAction SilentlyContinue) {
            $found = Find-Interpreter 'py' @("-$version")
            if ($found) { return $found }
        }
    }
    $onPath = Get-Command python -ErrorAction SilentlyContinue
    if ($onPath -and $onPath.Source -notlike '*\WindowsApps\*') {  # skip the Microsoft Store stub
        $found = Find-Interpreter $onPath.Source @()
        if ($found) { return $found }
    }
    foreach ($dir in @('Python312', 'Python311', 'Python310')) {  # per-user installs not yet on PATH
        $candidate = Join-Path $env:LOCALAPPDATA "Programs\Python\$dir\python.exe"
        if (Test-Path -LiteralPath $candidate) {
            $found = Find-Interpreter $candidate @()
            if ($found) { return $found }
        }
    }
    return $null
}

# PyTorch index for this machine, from the NVIDIA driver (nvidia-smi) if there is one.
function Select-TorchIndex {
    if (Test-Path Env:INDEXTTS_TORCH_INDEX) {
        Say "PyTorch index from INDEXTTS_TORCH_INDEX: '$env:INDEXTTS_TORCH_INDEX'"
        return $env:INDEXTTS_TORCH_INDEX
    }
    $cpu = 'https://download.pytorch.org/whl/cpu'
    if (-not (Get-Command nvidia-smi -ErrorAction SilentlyContinue)) {
        Say 'no NVIDIA driver found (nvidia-smi): using the CPU build of PyTorch'
        return $cpu
    }
    $gpus = @(Read-Command 'nvidia-smi' @('--query-gpu=name,compute_cap,driver_version', '--format=csv,noheader'))
    if ($gpus.Count -eq 0) {
        Say 'nvidia-smi reports no usable GPU: using the CPU build of PyTorch'
        return $cpu
    }
    $gpu = @(($gpus[0] -split ',') | ForEach-Object { $_.Trim() })
    $cap = 0.0
    if ($gpu.Count -ge 2) { [void][double]::TryParse($gpu[1], [Globalization.NumberStyles]::Float, [Globalization.CultureInfo]::InvariantCulture, [ref]$cap) }
    $cuda = 0.0
    $banner = @(Read-Command 'nvidia-smi' @()) -join "`n"
    if ($banner -match 'CUDA Version:\s*([0-9]+\.[0-9]+)') {
        $cuda = [double]::Parse($Matches[1], [Globalization.CultureInfo]::InvariantCulture)
    }
    Say ("GPU: {0} (compute capability {1}), driver supports CUDA {2}" -f $gpu[0], $cap, $cuda)
    if ($cuda -ge 12.8 -and ($cap -eq 0 -or $cap -ge 7.5)) { return 'https://download.pytorch.org/whl/cu128' }
    if ($cuda -ge 12.6) { return 'https://download.pytorch.org/whl/cu126' }
    if ($cuda -ge 11.8) { return 'https://download.pytorch.org/whl/cu118' }
    Say 'the NVIDIA driver is too old for current PyTorch CUDA builds: using the CPU build (update the driver for GPU speed)'
    return $cpu
}

# ------------------------------------------------------------------------------------------ 1. Python
Step 'looking for Python 3.10+ (64-bit)'
$python = Find-Python
if (-not $python) {
    Say 'Python 3.10 or newer was not found.'
    if (Get-Command winget -ErrorAction SilentlyContinue) {
        $answer = 'n'
        if ($env:INDEXTTS_ASSUME_YES -eq '1') { $answer = 'y' } else { $answer = Read-Host 'Install Python 3.11 now with winget (per user, no admin)? [y/N]' }
        if ($answer -match '^[yY]') {
            Say 'running: winget install -e --id Python.Python.3.11 --scope user'
            & winget install -e --id Python.Python.3.11 --scope user --accept-package-agreements --accept-source-agreements
            $python = Find-Python
        }
    }
    if (-not $python) {
        Fail 'Python 3.10+ (64-bit) is not installed.' 'Install it from https://www.python.org/downloads/windows/ (tick "Add python.exe to PATH") or run: winget install -e --id Python.Python.3.11 --scope user ; then run this launcher again.'
    }
}
Say "using $python"
if ((Test-Command $python @('-c', 'import tkinter')) -ne 0) {
    Say 'note: this Python has no Tk (tkinter); the app window needs it. Reinstall Python with "tcl/tk and IDLE" ticked.'
}
$longPaths = Get-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\FileSystem' -Name LongPathsEnabled -ErrorAction SilentlyContinue
if ($here.Length -gt 80 -and -not ($longPaths -and $longPaths.LongPathsEnabled -eq 1)) {
    Say "note: the app folder path is long ($($here.Length) characters) and Windows long paths are off; PyTorch may fail to install. Move the folder closer to the drive root (e.g. C:\IndexTTS2) if it does."
}

# ------------------------------------------------------------------------------------------ 2. venv
$py = Join-Path $venv 'Scripts\python.exe'
$pyw = Join-Path $venv 'Scripts\pythonw.exe'
if (Test-Path -LiteralPath $py) {
    Step "reusing the virtual environment in $venv"
} else {
    Step "creating a virtual environment in $venv"
    & $python -m venv $venv
    if ($LASTEXITCODE -ne 0 -or -not (Test-Path -LiteralPath $py)) {
        Fail "could not create the virtual environment in $venv." 'Check that the folder is writable (not inside Program Files) and that your antivirus allows python.exe, then run again.'
    }
}

# ------------------------------------------------------------------------------------------ 3. PyTorch
if ((Test-Command $py @('-c', 'import torch')) -eq 0) {
    $version = @(Read-Command $py @('-c', 'import torch; print(torch.__version__)')) -join ''
    Step "PyTorch already installed: $version"
} else {
    Step 'choosing and installing PyTorch'
    $spec = 'torch'
    if ($env:INDEXTTS_TORCH_SPEC) { $spec = $env:INDEXTTS_TORCH_SPEC }
    $index = Select-TorchIndex
    $indexArgs = @()
    $source = 'PyPI'
    if ($index) { $indexArgs = @('--index-url', $index); $source = $index }
    Say "installing $spec from $source (0.2-3 GB; this takes a while, once)"
    & $py -m pip install $spec @indexArgs
    if ($LASTEXITCODE -ne 0) {
        Fail 'could not install PyTorch.' 'Check your internet connection (and proxy), then run again. To force the CPU build: set INDEXTTS_TORCH_INDEX=https://download.pytorch.org/whl/cpu'
    }
    if ($index -like '*/cu*') {
        $check = 'import torch; assert torch.cuda.is_available(), "no CUDA device"; a = torch.randn(64, 64, device="cuda"); print(torch.cuda.get_device_name(0), float((a @ a).sum().cpu()))'
        if ((Test-Command $py @('-c', $check)) -eq 0) {
            Say 'CUDA works: a test kernel ran on the GPU'
        } else {
            Say 'warning: the CUDA build is installed but a test kernel failed on the GPU. Update the NVIDIA driver; the app will use the CPU until then.'
        }
    }
}

# ------------------------------------------------------------------------------------------ 4. project
$stamp = Join-Path $venv ".installed-$mode"
$extras = ''
if ($mode -eq 'test') { $extras = '[test,build]' }
$upToDate = (Test-Path -LiteralPath $stamp) -and ((Get-Item -LiteralPath 'pyproject.toml').LastWriteTimeUtc -le (Get-Item -LiteralPath $stamp).LastWriteTimeUtc)
if ($upToDate) {
    Step 'dependencies up to date'
} else {
    Step "installing IndexTTS2 Desktop$extras and its dependencies"
    & $py -m pip install --quiet -e ".$extras"
    if ($LASTEXITCODE -ne 0) {
        Fail 'dependency installation failed; see the pip messages above.' 'Check your internet connection and run again; if it keeps failing, delete the .venv folder and run again.'
    }
    Set-Content -LiteralPath $stamp -Value (Get-Date -Format o)
}

if ($mode -eq 'test') {
    Step 'running the test suite'
    & $py -m pytest @Rest
    exit $LASTEXITCODE
}
if ($mode -eq 'selftest') {
    Step 'running the self-test'
    & $py main.py --selftest @Rest
    exit $LASTEXITCODE
}

# ------------------------------------------------------------------------------------------ 5. models
$modelCheck = Test-Command $py @('main.py', 'models', 'check', '--quiet')
if ($modelCheck -eq 0) {
    Step 'models are installed'
} else {
    Step 'models are missing: starting the model setup (you can also do it later from the app)'
    & $py main.py models download
    if ($LASTEXITCODE -ne 0) { Say 'model setup did not finish; the app will explain what is missing' }
}

# ------------------------------------------------------------------------------------------ 6. app
Step 'starting IndexTTS2 Desktop'
$runner = $pyw
if (-not (Test-Path -LiteralPath $runner)) { $runner = $py }
# Start-Process joins arguments with spaces: quote the ones that contain spaces.
$appArgs = @('main.py') + @($Rest | ForEach-Object { if ($_ -match '\s') { '"' + $_ + '"' } else { $_ } })
try {
    Start-Process -FilePath $runner -ArgumentList $appArgs -WorkingDirectory $here | Out-Null
} catch {
    Fail "could not start the app: $($_.Exception.Message)" "Run '$py main.py' in a console to see the error."
}
Say 'the app window opens in a few seconds; if it does not, run .venv\Scripts\python.exe main.py to see why.'
