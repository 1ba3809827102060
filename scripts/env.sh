# Sourced by the other scripts: the build environment (libtorch from the set-up's Python
# environment, when the crate links it).
if [ -x "$(dirname "${BASH_SOURCE[0]}")/setup-torch.sh" ]; then
    eval "$("$(dirname "${BASH_SOURCE[0]}")/setup-torch.sh" 2>/dev/null)"
fi
